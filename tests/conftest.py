import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_overrides(data_dir: Path, out_dir: Path) -> list[str]:
    """A model and a run small enough for seconds on a CPU."""
    return [f"data.train_shards={data_dir}/train", f"train.out_dir={out_dir}",
            "model.embed_dim=64", "model.image.image_size=32", "model.text.hidden_size=64",
            "model.text.num_layers=1", "model.text.num_heads=2", "model.text.intermediate_size=128",
            "model.text.max_length=64", "data.num_workers=0", "data.shuffle_buffer=64",
            "train.batch_size=32", "train.steps=6", "train.warmup_steps=1", "train.log_every=2",
            "train.save_every=3"]


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

    return load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml",
                       tiny_overrides(demo_data, tmp_path / "run"))
