"""Benchmark contrastive losses: time and extra peak memory of forward + backward, fp32, CPU/GPU.

Each (implementation, batch size) case runs in its own process so peak memory is its own.
Prints a table and writes JSON. For mclip's tiled losses the table also gives the time of the
matrix products they cannot avoid (:func:`gemm_bound`, measured in the same process) and the
loss's share of that bound.

    python scripts/bench_loss.py                         # B in 4096 16384 65536, d=512
    python scripts/bench_loss.py --batch 4096 --impl mclip_infonce open_clip_clip
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

IMPLS = ("mclip_infonce", "mclip_sigmoid", "open_clip_clip", "open_clip_siglip", "naive_infonce")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(impl: str, batch: int, dim: int, chunk: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x = F.normalize(torch.randn(batch, dim, device=device), dim=-1).requires_grad_()
    y = F.normalize(torch.randn(batch, dim, device=device), dim=-1).requires_grad_()
    log_scale = torch.tensor(2.659, device=device, requires_grad=True)
    bias = torch.tensor(-10.0, device=device, requires_grad=True)

    if impl == "mclip_infonce":
        from mclip.losses.tiled import tiled_infonce

        def fn():
            return tiled_infonce(x, y, log_scale, chunk=chunk)
    elif impl == "mclip_sigmoid":
        from mclip.losses.tiled import tiled_sigmoid

        def fn():
            return tiled_sigmoid(x, y, log_scale, bias, chunk=chunk)
    elif impl == "open_clip_clip":
        from open_clip.loss import ClipLoss

        clip_loss = ClipLoss()

        def fn():
            return clip_loss(x, y, log_scale.exp())
    elif impl == "open_clip_siglip":
        from open_clip.loss import SigLipLoss

        siglip_loss = SigLipLoss()

        def fn():
            return siglip_loss(x, y, log_scale.exp(), bias)
    else:
        from mclip.losses.reference import infonce_reference

        def fn():
            return infonce_reference(x, y, log_scale)

    def once():
        for t in (x, y, log_scale, bias):
            t.grad = None
        fn().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if batch <= 16384:
        once()  # warm-up (allocator, kernels), not timed
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    start = time.perf_counter()
    once()
    seconds = time.perf_counter() - start
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    row = {
        "impl": impl,
        "batch": batch,
        "dim": dim,
        "chunk": chunk,
        "device": device,
        "seconds": seconds,
        "extra_peak_bytes": max(peak, 0),
        "status": "ok",
    }
    if impl.startswith("mclip_"):
        row["gemm_seconds"] = gemm_bound(x.detach(), y.detach(), chunk, impl, device)
    return row


def gemm_bound(x, y, chunk: int, impl: str, device: str) -> float:
    """Seconds of the B x B x d matrix products the tiled loss cannot avoid, tile by tile, in
    this process: InfoNCE forms each tile's logits twice (forward, and backward's recompute)
    and two gradient products; the sigmoid loss forms them once (forward holds the gradient)."""
    import torch

    products = 2 if impl == "mclip_infonce" else 1

    tile = torch.empty(min(chunk, x.shape[0]), y.shape[0], device=x.device)
    grad_x, grad_y = torch.empty_like(x), torch.zeros_like(y)

    def once():  # into preallocated outputs: the bound has no allocation in it
        for start in range(0, x.shape[0], chunk):
            rows = x[start : start + chunk]
            for _ in range(products):
                torch.mm(rows, y.T, out=tile[: rows.shape[0]])
            torch.mm(tile[: rows.shape[0]], y, out=grad_x[start : start + chunk])
            grad_y.addmm_(tile[: rows.shape[0]].T, rows)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    once()
    start = time.perf_counter()
    once()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        help="address-space limit of each case's process (default: 80%% of RAM); "
        "a case that needs more fails with an allocation error",
    )
    parser.add_argument("--out", default="bench_out/bench_loss.json")
    parser.add_argument("--case", nargs=2, metavar=("IMPL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        print(
            json.dumps(run_case(args.case[0], int(args.case[1]), args.dim, args.chunk, args.device))
        )
        return 0

    limit = (
        args.memory_limit_gb
        or 0.8 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    )

    def cap_memory():  # runs in the child: fail cleanly instead of swapping or OOM-killing
        cap = int(limit * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    results = []
    for batch in args.batch:
        for impl in args.impl:
            cmd = [
                sys.executable,
                __file__,
                "--case",
                impl,
                str(batch),
                "--dim",
                str(args.dim),
                "--chunk",
                str(args.chunk),
                "--device",
                args.device,
            ]
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                preexec_fn=cap_memory if args.device == "cpu" else None,
            )
            if proc.returncode == 0:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                last = (proc.stderr.strip().splitlines() or [""])[-1]
                reason = (
                    f"cannot run: out of memory under the {limit:.0f} GB limit"
                    if "alloc" in last.lower() or "memory" in last.lower()
                    else f"failed (exit {proc.returncode}): {last[:120]}"
                )
                row = {"impl": impl, "batch": batch, "dim": args.dim, "status": reason}
            results.append(row)
            print(_format_row(row), flush=True)

    print("\n" + table(results))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")
    return 0


def _format_row(row: dict) -> str:
    if row["status"] != "ok":
        return f"B={row['batch']:>6} {row['impl']:<17} {row['status']}"
    bound = (
        f"  GEMM bound {row['gemm_seconds']:.2f} s "
        f"({100 * row['gemm_seconds'] / row['seconds']:.0f}%)"
        if "gemm_seconds" in row
        else ""
    )
    return (
        f"B={row['batch']:>6} {row['impl']:<17} {row['seconds']:8.2f} s "
        f"{row['extra_peak_bytes'] / 2**20:10.0f} MiB{bound}"
    )


def table(results: list[dict]) -> str:
    """Markdown table, with mclip's time and memory relative to open_clip at the same B."""
    lines = [
        "| B | implementation | time (s) | extra peak memory (MiB) | time vs open_clip | "
        "memory vs open_clip | GEMM bound (s) | share of the GEMM bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref = {(r["batch"], r["impl"]): r for r in results if r["status"] == "ok"}
    partner = {"mclip_infonce": "open_clip_clip", "mclip_sigmoid": "open_clip_siglip"}
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['batch']} | {r['impl']} | – | – | {r['status']} | |")
            continue
        other = ref.get((r["batch"], partner.get(r["impl"], "")))
        time_ratio = f"{r['seconds'] / other['seconds']:.2f}x" if other else ""
        mem_ratio = (
            f"{100 * r['extra_peak_bytes'] / max(other['extra_peak_bytes'], 1):.1f}%"
            if other
            else ""
        )
        gemm = r.get("gemm_seconds")
        bound = f"{gemm:.2f} | {100 * gemm / r['seconds']:.0f}%" if gemm else " | "
        lines.append(
            f"| {r['batch']} | {r['impl']} | {r['seconds']:.2f} | "
            f"{r['extra_peak_bytes'] / 2**20:.0f} | {time_ratio} | {mem_ratio} | "
            f"{bound} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
