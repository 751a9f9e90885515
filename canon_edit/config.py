"""One config system: dataclasses, filled from YAML presets shipped inside packages and `--set key=value`.

Unknown keys are errors (a typo must not silently fall back to a default). A dataclass may define
`validate(prefix)`, called once it is filled, so a bad value fails before any work starts. Presets
are package data read through importlib.resources, so an installed wheel has them too: the core's
edit presets live in `canon_edit.presets/edit/`, a representation's in the package its `presets`
attribute names.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError

# a quality preset is a time on the reference CPU (2 cores): what a fit spends, known before it starts
QUALITY_SECONDS = {"draft": 120.0, "default": 600.0, "best": 1800.0}

T = TypeVar("T")

CORE_PRESETS = "canon_edit.presets"


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config option '{where}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        seq = [_coerce(v, inner, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise UserError(f"config option '{where}' must be true or false, got {value!r}")
    if tp in (int, float, str):
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise UserError(f"config option '{where}' must be {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise UserError(f"config option '{where}' must be an integer, got {value!r}")
        return out
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (possibly partial) nested dict, rejecting unknown keys."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise UserError(
            f"unknown config option '{prefix}{unknown[0]}'; known options: "
            + ", ".join(prefix + k for k in types_)
        )
    base = cls()
    for k, v in data.items():
        setattr(base, k, _coerce(v, types_[k], prefix + k))
    validate = getattr(base, "validate", None)
    if validate is not None:
        validate(prefix)
    return base


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["a.b=3", "c=x"]` → `{"a": {"b": 3}, "c": "x"}` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: Any) -> dict[str, Any]:
    """A YAML mapping from a file path or a package resource."""
    path = Path(path) if isinstance(path, str) else path
    if not path.is_file():
        raise UserError(f"config file not found: {path}; pass an existing YAML file or a preset name")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    return data


def resolve_preset(name_or_path: str, package: str | None = CORE_PRESETS, group: str = "") -> Any:
    """A preset name (`codef`, `sds`) is looked up in `package`/`group`; a YAML path is a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    if package is None:
        raise UserError(f"unknown preset '{name_or_path}'; this method ships none: give a YAML file")
    folder = resources.files(package)
    for part in filter(None, group.split("/")):
        folder = folder / part
    candidate = folder / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = sorted(q.name[:-5] for q in folder.iterdir() if q.name.endswith(".yaml"))
        raise UserError(f"unknown preset '{name_or_path}'; available: {', '.join(names) or 'none'}")
    return candidate


def load_config(
    cls: type[T],
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    group: str = "",
    package: str | None = CORE_PRESETS,
) -> T:
    """Defaults of `cls`, then the preset's YAML, then overrides — each layer may be partial."""
    data: dict[str, Any] = load_yaml(resolve_preset(preset, package, group)) if preset else {}
    if overrides:
        data = deep_merge(data, overrides)
    return from_dict(cls, data)
