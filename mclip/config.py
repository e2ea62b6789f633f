"""Typed configuration: YAML loading and dotted overrides into the dataclasses of config_schema
(checks: config_checks).

A config is data (the big_vision habit): ``load_config("configs/demo.yaml", ["train.steps=200"])``
returns a fully typed, validated :class:`Config`. Every error names the offending key and the
valid choices, and is raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from mclip.config_checks import validate
from mclip.config_data import DataConfig, SourceConfig
from mclip.config_distill import DistillConfig, TeacherConfig, TeacherLearningConfig
from mclip.config_schema import (
    Config,
    DistConfig,
    EvalConfig,
    ImageTowerConfig,
    InheritConfig,
    LossConfig,
    ModelConfig,
    TextTowerConfig,
    TrainConfig,
)
from mclip.errors import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DistConfig",
    "DistillConfig",
    "EvalConfig",
    "ImageTowerConfig",
    "InheritConfig",
    "LossConfig",
    "ModelConfig",
    "SourceConfig",
    "TeacherConfig",
    "TeacherLearningConfig",
    "TextTowerConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "save_config",
]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        allowed = " or ".join(_type_name(t) for t in typing.get_args(tp))
        raise ConfigError(f"config key '{key}': expected {allowed}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}': expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {
            _coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()
        }
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(
            f"config key '{key}': expected {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        )
    return value


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping of "
            f"keys, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = prefix + str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key '{full}'.{hint} Valid keys here: "
                f"{', '.join(prefix + n for n in names)}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, full + ".")
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            if not isinstance(value, list):
                raise ConfigError(
                    f"config key '{full}': expected a list of mappings, got {value!r}"
                )
            kwargs[key] = [
                _build(typing.get_args(tp)[0], item, f"{full}[{i}].")
                for i, item in enumerate(value)
            ]
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``'train.steps=200'`` into (['train', 'steps'], 200); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(
            f"override '{item}' is not of the form key=value (for example train.steps=200)"
        )
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override '{item}': the value is not valid YAML ({error})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
            node = node[part]
        node[path[-1]] = value
    return data


def config_from_dict(data: dict[str, Any] | None, overrides: list[str] | None = None) -> Config:
    """Build and validate a :class:`Config` from nested dicts plus dotted overrides."""
    data = apply_overrides(dict(data or {}), list(overrides or []))
    return validate(_build(Config, data, ""))


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise ConfigError(
                f"config file '{path}' {what}; pass --config with a YAML "
                f"file such as configs/demo.yaml"
            )
        try:
            data = yaml.safe_load(path.read_text("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            reason = " ".join(str(error).split())
            raise ConfigError(f"config file '{path}' is not valid YAML: {reason}") from None
        if not isinstance(data, dict):
            found = "empty" if data is None else f"a YAML {type(data).__name__}"
            raise ConfigError(
                f"config file '{path}' is {found}, not a mapping of sections "
                f"(model:, data:, train:, ...); see configs/demo.yaml"
            )
    return config_from_dict(data, overrides)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (keys in declaration order, Unicode kept)."""
    Path(path).write_text(
        yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), "utf-8"
    )
