"""Recipes: the TOML files ``clip-model`` commands read their settings from.

A recipe has one table per command (``[pretrain]``, ``[finetune]``, ``[realign]``,
``[mine-captions]``, ``[eval]``, ``[export]``, ``[experiment]``), ``[stages]`` with defaults
shared by the three training stages, and ``[recipe]`` with its ``name`` and ``out_root``;
``{out_root}`` in any string is replaced by it, and ``$VARS`` / ``~`` are expanded, so one
``--out-root`` moves a whole chain of stages.

A command's settings are resolved by the precedence code every clip-ingest command uses
(:func:`clip_ingest.connectors.config.resolve_settings`): each field of its config dataclass
(a stage config, ``MineConfig``, ``ExperimentConfig``, or ``EvalSettings`` / ``ExportSettings``
beside those commands' options) is
a :class:`~clip_ingest.connectors.config.Setting` (a nested dataclass's fields are dotted,
``train.epochs``), the recipe's table over ``[stages]`` over the dataclass defaults gives
its default, and flags (``--set`` included) override it. Environment variables do not reach
recipes: a recipe run is reproduced from its file and its command line alone.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from clip_ingest.connectors.config import resolve_settings
from clip_ingest.connectors.setting import Setting

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
STAGES = ("pretrain", "finetune", "realign")
_REQUIRED = object()
_SIMPLE_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


class RecipeError(ValueError):
    """A recipe or a setting of it is invalid (a usage error: exit code 2)."""


class RecipeParameterError(RecipeError):
    """A recipe name, file or `--set` item that cannot be read (reported as a bad parameter)."""


def shipped_recipes() -> list[str]:
    """The names of the recipes shipped in :data:`RECIPE_DIR`."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(recipe: str | None) -> dict[str, Any]:
    """A recipe file (path) or shipped recipe (name) as a dict; ``{}`` when ``recipe`` is None."""
    if not recipe:
        return {}
    path = Path(recipe).expanduser()
    if not path.is_file():
        path = RECIPE_DIR / f"{recipe}.toml"
    if not path.is_file():
        raise RecipeParameterError(f"no recipe file {recipe!r} and no shipped recipe of that name ({', '.join(shipped_recipes())})")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeParameterError(f"{path} is not valid TOML: {exc}") from exc


def parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    """``("train.epochs=2", "templates=['a {label}']")`` -> a nested dict (values read as TOML, else text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeParameterError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides`` (nested tables merged, ``None`` values ignored)."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def expand(value: Any, out_root: str) -> Any:
    """``value`` with ``{out_root}`` replaced and ``$VARS`` / ``~`` expanded in every string."""
    if isinstance(value, str):
        return os.path.expanduser(os.path.expandvars(value.replace("{out_root}", out_root)))
    if isinstance(value, list):
        return [expand(v, out_root) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, out_root) for k, v in value.items()}
    return value


def out_root_of(recipe: dict[str, Any], flag: str | None) -> str:
    """``--out-root``, else the recipe's ``[recipe] out_root``, else ``runs/<recipe name>``."""
    meta = recipe.get("recipe", {})
    return str(flag or meta.get("out_root") or f"runs/{meta.get('name', 'clip-model')}")


def table(recipe: dict[str, Any], name: str) -> dict[str, Any]:
    """The recipe's ``[name]`` table; for the training stages over ``[stages]`` and the default
    ``out_dir = "{out_root}/<stage>"``."""
    base = recipe.get(name, {})
    if name in STAGES:
        base = merge(merge({"out_dir": f"{{out_root}}/{name}"}, recipe.get("stages", {})), base)
    return base


def _nested(field: dataclasses.Field) -> type | None:
    """The dataclass type of a field whose default is a dataclass (its table is dotted), else None."""
    if field.default_factory is dataclasses.MISSING:
        return None
    default = field.default_factory()
    return type(default) if dataclasses.is_dataclass(default) else None


def dataclass_settings(cls: type, prefix: str = "") -> tuple[Setting, ...]:
    """One :class:`Setting` per field of ``cls``, a nested dataclass's fields dotted (``train.epochs``);
    a field without default gets a marker that :func:`build_dataclass` reports as missing."""
    specs: list[Setting] = []
    for field in dataclasses.fields(cls):
        nested = _nested(field)
        if nested is not None:
            specs += dataclass_settings(nested, f"{prefix}{field.name}.")
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = _REQUIRED
        kind = _SIMPLE_TYPES.get(field.type, object) if isinstance(field.type, str) else object
        specs.append(Setting(f"{prefix}{field.name}", kind, default))
    return tuple(specs)


def _flatten(values: dict[str, Any], cls: type, where: str, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` along ``cls``'s nested dataclasses; an
    unknown key is a :class:`RecipeError` naming the valid ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RecipeError(f"[{where}]: unknown setting(s) {unknown}; valid: {', '.join(fields)}")
    flat: dict[str, Any] = {}
    for key, value in values.items():
        nested = _nested(fields[key])
        if nested is not None and isinstance(value, dict):
            flat.update(_flatten(value, nested, f"{where}.{key}", f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _construct(cls: type, values: dict[str, Any], given: set[str], where: str, prefix: str = "") -> Any:
    """``cls`` from the resolved dotted ``values`` of the ``given`` keys (the others keep the
    dataclass defaults); lists become tuples."""
    kwargs: dict[str, Any] = {}
    missing = []
    for field in dataclasses.fields(cls):
        name = f"{prefix}{field.name}"
        nested = _nested(field)
        if nested is not None:
            if any(key.startswith(f"{name}.") for key in given):
                kwargs[field.name] = _construct(nested, values, given, f"{where}.{field.name}", f"{name}.")
        elif values[name] is _REQUIRED:
            missing.append(field.name)
        elif name in given:
            kwargs[field.name] = tuple(values[name]) if isinstance(values[name], list) else values[name]
    if missing:
        raise RecipeError(f"[{where}]: missing required setting(s) {missing} (in the recipe or as flags)")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a setting the config itself rejects
        raise RecipeError(f"[{where}]: {exc}") from exc


def build_dataclass(cls: type, values: dict[str, Any], where: str, flags: dict[str, Any] | None = None) -> Any:
    """``cls`` from a recipe table's ``values`` and command-line ``flags`` (a nested dict, ``None``:
    not given), resolved by :func:`~clip_ingest.connectors.config.resolve_settings`: flags over
    the recipe over the dataclass defaults. An unknown key or a missing required one is a
    :class:`RecipeError` naming the valid keys."""
    recipe_values = _flatten(values, cls, where)
    given = _flatten(merge({}, flags or {}), cls, where)
    specs = tuple(dataclasses.replace(s, default=recipe_values.get(s.name, s.default))
                  for s in dataclass_settings(cls))
    settings = resolve_settings(given, specs, section=where, config_file=os.devnull, env={})
    return _construct(cls, dict(settings), set(recipe_values) | set(given), where)


def resolve(recipe: dict[str, Any], name: str, cls: type, flags: dict[str, Any], out_root: str | None) -> Any:
    """The ``[name]`` config of ``recipe`` as ``cls``, ``flags`` (a nested dict) over it, placeholders expanded."""
    root = out_root_of(recipe, out_root)
    return build_dataclass(cls, expand(table(recipe, name), root), name, expand(merge({}, flags), root))
