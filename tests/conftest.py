import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
# Two threads in all: under pytest-xdist (scripts/test.sh runs one worker per CPU) the workers
# share them, so two workers on 2 CPUs get one thread each. A subprocess whose numbers are
# compared exactly with this process's runs with the same count (``THREADS_ENV``): float sums
# over another number of threads differ in the last bits.
TORCH_THREADS = max(1, 2 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
torch.set_num_threads(TORCH_THREADS)
THREADS_ENV = {"OMP_NUM_THREADS": str(TORCH_THREADS)}

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run_cli(*args, cwd=None, env=None):
    """``python -m mclip.cli ARGS`` in a subprocess (from the repository root by default)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "mclip.cli", *map(str, args)],
        cwd=cwd or root,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def log_records(run: Path) -> list[dict]:
    """The records of a run's ``log.jsonl``."""
    import json

    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def tiny_overrides(data_dir: Path, out_dir: Path) -> list[str]:
    """A model and a run small enough for seconds on a CPU."""
    return [
        f"data.train_shards={data_dir}/train",
        f"train.out_dir={out_dir}",
        "model.embed_dim=64",
        "model.image.image_size=32",
        "model.text.hidden_size=64",
        "model.text.num_layers=1",
        "model.text.num_heads=2",
        "model.text.intermediate_size=128",
        "model.text.max_length=64",
        "data.num_workers=0",
        "data.shuffle_buffer=64",
        "train.batch_size=32",
        "train.steps=6",
        "train.warmup_steps=1",
        "train.log_every=2",
        "train.save_every=3",
    ]


def random_image_folder(
    root: Path, classes: int = 3, per_class: int = 2, size: int = 32, seed: int = 0
) -> Path:
    """An ImageFolder tree ``root/n0000/0.png ...`` of random RGB images; returns ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"n{c:04d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
    return root


def tiny_model_config(image: str = "resnet10t", **text):
    """A Config with a tiny image tower (32 px) and a 1-layer byte-level text tower."""
    from mclip.config import config_from_dict

    return config_from_dict(
        {
            "model": {
                "embed_dim": 16,
                "image": {"name": image, "image_size": 32},
                "text": {
                    "hidden_size": 32,
                    "num_layers": 1,
                    "num_heads": 2,
                    "intermediate_size": 64,
                    "max_length": 40,
                    "dropout": 0.0,
                    **text,
                },
            }
        }
    )


@pytest.fixture(scope="module")
def adapter():
    """A tiny random mclip model behind the adapter interface (resnet10t 32 px, seed 0)."""
    import torch

    from mclip.models.adapters.native import NativeAdapter
    from mclip.models.dual import DualEncoder

    cfg = tiny_model_config("resnet10t")
    torch.manual_seed(0)
    return NativeAdapter(DualEncoder(cfg.model), cfg, name="tiny")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A small demo dataset: 480 training images in 4 shards, 2 eval images per class."""
    from mclip.data.demo import write_demo_dataset

    out = tmp_path_factory.mktemp("demo_data")
    write_demo_dataset(out, n_train=480, n_eval_per_class=2, image_size=32, shard_size=120, seed=1)
    return out


@pytest.fixture
def tiny_config(demo_data, tmp_path):
    from mclip.config import load_config

    return load_config(
        Path(__file__).resolve().parents[1] / "configs" / "demo.yaml",
        tiny_overrides(demo_data, tmp_path / "run"),
    )


def register_tiny_open_clip(root: Path, name: str):
    """Register a tiny random-init open_clip ViT (32 px, width 64, 2 layers) as ``name`` and
    return the model. ``name`` must not contain 'siglip' (open_clip would want a hub tokenizer)."""
    import json

    import open_clip

    config = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }
    (root / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(root / f"{name}.json")
    torch.manual_seed(0)
    return open_clip.create_model(name).eval()


def _gloo_entry(rank, world, port, out, compute):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = compute(rank, world)
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


def on_gloo_ranks(compute, tmp_path: Path, world: int = 2):
    """Run ``compute(rank, world)`` (a module-level function) on ``world`` spawned processes
    joined in a gloo group; return rank 0's result."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "rank0.pt"
    mp.start_processes(
        _gloo_entry,
        args=(world, port, str(out), compute),
        nprocs=world,
        start_method="spawn",
        join=True,
    )
    return torch.load(out, weights_only=False)


def perturbed(model):
    """``model`` with every float weight and buffer moved off its initialisation (BatchNorm
    statistics, biases and scales included, variances kept positive), in eval mode: exports are
    checked on a model whose every tensor matters."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
                if "running_var" in name:
                    tensor.abs_()
    return model.eval()
