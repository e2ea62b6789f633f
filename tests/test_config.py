from pathlib import Path

import pytest
import yaml

from mclip.config import Config, ConfigError, config_from_dict, load_config, save_config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_demo_config_loads_with_overrides():
    cfg = load_config(
        DEMO,
        [
            "train.steps=200",
            "loss.kind=sigmoid",
            "model.text.freeze=['encoder.*']",
            "train.grad_clip=null",
            "data.language_weights={en: 2, de: 1.5}",
        ],
    )
    assert cfg.train.steps == 200 and cfg.loss.kind == "sigmoid"
    assert cfg.model.text.freeze == ["encoder.*"]
    assert cfg.train.grad_clip is None
    assert cfg.data.language_weights == {"en": 2.0, "de": 1.5}


def test_every_shipped_config_is_valid():
    for path in sorted((DEMO.parent).glob("*.yaml")):
        load_config(path)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.stpes=5"], r"unknown config key 'train.stpes'. Did you mean 'train.steps'"),
        (
            ["trian.steps=5"],
            r"unknown config key 'trian'.*Valid keys here: model, data, loss, train",
        ),
        (["train.steps=many"], r"'train.steps': expected int, got 'many'"),
        (["train.steps=2.5"], r"'train.steps': expected int"),
        (["train.lr=fast"], r"'train.lr': expected float"),
        (["data.augment=3"], r"'data.augment': expected true or false"),
        (["model.image.pretrained=3"], r"'model.image.pretrained': expected bool or str"),
        (["data.languages=en"], r"'data.languages': expected a list"),
        (["loss.kind=triplet"], r"'loss.kind' is 'triplet'; valid choices: infonce, sigmoid"),
        (["model.text.pooling=max"], r"valid choices: mean, cls, eos"),
        (["train.precision=fp16"], r"valid choices: auto, fp32, bf16"),
        (["train.steps=0"], r"'train.steps' must be > 0"),
        (["train.lr=-1"], r"'train.lr' must be > 0"),
        (
            ["train.warmup_steps=700"],
            r"'train.warmup_steps' \(700\) must be smaller than 'train.steps'",
        ),
        (
            ["model.text.hidden_size=100", "model.text.num_heads=3"],
            r"divisible by 'model.text.num_heads'",
        ),
        (["data.language_policy=weighted"], r"'data.language_weights' is empty"),
        (["train.device=tpu"], r"'train.device' is 'tpu'"),
        (["train.steps"], r"not of the form key=value"),
        (["train=5"], r"'train': expected a mapping"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, overrides)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(DEMO, ["model.text.name=/some/dir", "data.languages=[de, zh]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["languages"] == [
        "de",
        "zh",
    ]


def test_defaults_are_valid():
    assert isinstance(config_from_dict({}), Config)


@pytest.mark.parametrize("path", sorted((DEMO.parent).glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_in_configs_is_a_valid_config(path):
    cfg = load_config(path)
    assert cfg.train.steps > 0
