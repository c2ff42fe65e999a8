"""Settings shared by the command-line tools, with one precedence rule.

``command-line flags > TOML config file > CLIP_INGEST_* environment > defaults``

The config file is ``--config FILE``, else ``./clip-ingest.toml`` when present; one file
serves every command (the format is documented in ``docs/configuration.md``):

* its top-level keys are settings for every command that has them; a key that some other
  command uses (``prune`` for ``clip-search``) is ignored, a key no command knows is an error;
* a ``[COMMAND]`` table (``[ingest]``, ``[search]``, ``[serve]``, ...) overrides them for that
  command; a key the command does not know there is an error, and so is a table no command owns.
  The other commands leave the table alone. ``[migrate]`` reads ``[ingest]`` first: a
  migration embeds the same sources as the cron job.

Each command declares its settings once, beside its options, and registers them here with
:func:`register_command` (this module never imports the command modules); importing
:mod:`clip_ingest.connectors.cli` registers them all, so any command can tell another
command's key from a typo. TOML values are checked strictly against the declared type (a
string is not a boolean, a number not a string); environment values, always strings, are
parsed (``1``/``true``/``yes``/``on``, comma-separated lists). Keys may use ``-`` or ``_``.
Each setting NAME can also come from the environment variable ``CLIP_INGEST_NAME``. Secrets
(a backend's key or token, ``api_key``) are never flags: only the environment or the config
file, and their values never appear in ``repr``, summaries or error messages.

A setting is declared once, as a :class:`~clip_ingest.connectors.setting.Setting`; the click
options are generated from it (:func:`clip_ingest.connectors.cli.common.setting_options`). The
backends' settings come from their descriptors (:mod:`clip_ingest.connectors.backends.registry`);
the target names and where each target keeps its collections from :mod:`clip_ingest.connectors.targets`
(the databases and the Parquet artifact).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .backends import registry
from .backends.registry import StoreTarget
from .setting import Setting
from .targets import TARGETS, locate

DEFAULT_CONFIG_FILE = "clip-ingest.toml"
DEFAULT_DATA_DIR = "clip-ingest-data"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A config file or environment value is invalid (a usage error: exit code 2)."""


#: what computes the vectors (see :mod:`clip_ingest.connectors.runtime`)
RUNTIMES = ("auto", "torch", "onnx")
QUANTIZATIONS = ("none", "int8")

COMMON_SETTINGS: tuple[Setting, ...] = (
    Setting("target", str, "qdrant", choices=TARGETS,
            help="Vector database, or parquet: a portable folder of Parquet shards (--out)"),
    Setting("out", str, None, help="Folder of the parquet target", default_text="DATA_DIR/parquet"),
    Setting("collection", str, "images", help="Collection name"),
    *registry.SETTINGS,
    Setting("data_dir", str, DEFAULT_DATA_DIR, help="Folder for embedded databases and run files"),
    Setting("model", str, "starter", help="Model spec, e.g. starter, ViT-B-32:laion2b_s34b_b79k, /path/to/export"),
    Setting("device", str, "auto", help="auto, cpu, cuda, cuda:1, mps"),
    Setting("runtime", str, "auto", choices=RUNTIMES,
            help="What computes the vectors: onnx (ONNX Runtime; a model without ONNX towers is exported once "
            "and cached in ~/.cache/clip-ingest; same vectors and model id as torch), torch, or auto: ONNX "
            "Runtime for a model that carries its towers (the starter, clip-model export --onnx), torch for "
            "the rest"),
    Setting("quantize", str, "none", choices=QUANTIZATIONS,
            help="int8: dynamic int8 quantization on ONNX Runtime (faster on a CPU; slightly different "
            "vectors, so a model id of its own: it cannot share a collection with fp32)"),
    Setting("cpus", int, None, minimum=1,
            help="CPUs to size the threads to: the model's, and half as many decode workers",
            default_text="the CPUs this process may use (affinity, cgroup quota); OMP_NUM_THREADS still names the model's"),
)
"""The settings of every command, in the order ``--help`` lists them."""


class Settings(Mapping[str, Any]):
    """Resolved settings: read as ``settings.name`` or ``settings["name"]``; secrets hidden in repr."""

    def __init__(self, values: Mapping[str, Any], specs: Sequence[Setting], origins: Mapping[str, str]) -> None:
        self._values = dict(values)
        self._secret = {s.name for s in specs if s.secret}
        self.origins = dict(origins)
        """name -> where the value came from: flag, config, env or default."""

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some values changed (their origin becomes ``derived``)."""
        copy = Settings({**self._values, **changes}, (), {**self.origins, **{k: "derived" for k in changes}})
        copy._secret = set(self._secret)
        return copy

    def public(self) -> dict[str, Any]:
        """Every non-secret value (safe to log or write into a summary)."""
        return {k: v for k, v in self._values.items() if k not in self._secret}

    def __repr__(self) -> str:
        shown = {k: ("***" if k in self._secret and v else v) for k, v in self._values.items()}
        return f"Settings({shown})"


@dataclass(frozen=True)
class Command:
    """A command's own settings (besides :data:`COMMON_SETTINGS`) and the config tables it reads."""

    name: str
    """Its table in the config file, e.g. ``ingest`` for ``[ingest]``."""
    settings: tuple[Setting, ...]
    inherits: tuple[str, ...] = ()
    """Tables read before its own (later tables override earlier ones)."""

    @property
    def specs(self) -> tuple[Setting, ...]:
        """Every setting the command resolves: the common ones, then its own."""
        return COMMON_SETTINGS + self.settings


_COMMANDS: dict[str, Command] = {}


def register_command(name: str, settings: Sequence[Setting], *, inherits: Sequence[str] = ()) -> Command:
    """Declare the command that owns the ``[name]`` table and its settings; returns it (a
    module registers each of its commands once, at import)."""
    command = Command(name, tuple(settings), tuple(inherits))
    known = _COMMANDS.setdefault(name, command)
    if known != command:
        raise ValueError(f"command {name!r} is already registered with other settings")
    return command


def registered_commands() -> Mapping[str, Command]:
    """Every registered command by name (complete once :mod:`clip_ingest.connectors.cli` is imported)."""
    return dict(_COMMANDS)


_TYPE_NAMES = {bool: "true or false (a TOML boolean)", int: "an integer", float: "a number",
               list: "a list of strings, e.g. [\"a\", \"b\"]", str: "a string (in quotes)"}


def _check_toml_value(setting: Setting, value: Any, where: str) -> Any:
    """A TOML value of the setting's declared type, or :class:`ConfigError` naming the key and the type."""
    kind = setting.type
    if kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        shown = f"{_toml_type(value)} (not shown: a secret)" if setting.secret else f"{_toml_type(value)} {value!r}"
        raise ConfigError(f"{where}: {setting.name!r} must be {_TYPE_NAMES.get(kind, kind.__name__)}, not {shown}")
    return list(value) if kind is list else float(value) if kind is float else value


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "the boolean"
    if isinstance(value, (int, float)):
        return "the number"
    if isinstance(value, str):
        return "the string"
    if isinstance(value, list):
        return "the list"
    return "the table" if isinstance(value, dict) else f"the {type(value).__name__}"


def _parse_env(setting: Setting, value: str, variable: str) -> Any:
    """Convert an environment string to the setting's type."""
    where = f"environment {variable}"
    if setting.type is bool:
        if value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if setting.type is list:
        return [v.strip() for v in value.split(",") if v.strip()]
    if setting.type in (int, float):
        try:
            return setting.type(value)
        except ValueError:
            raise ConfigError(f"{where} must be {'an integer' if setting.type is int else 'a number'}, not {value!r}") from None
    return value


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _owners(key: str) -> list[str]:
    return sorted(c.name for c in _COMMANDS.values() if key in {s.name for s in c.specs})


def read_config_file(
    path: str | os.PathLike, section: str, specs: Sequence[Setting], inherits: Sequence[str] = ()
) -> dict[str, Any]:
    """The values a command with ``specs`` and table ``section`` takes from the TOML file at
    ``path``: its top-level keys, then ``inherits``' tables, then ``[section]``, each checked
    against its declared type. Unknown keys and tables are errors (see the module doc)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    mine = {s.name: s for s in specs}
    everyone = set(mine).union(*({s.name for s in c.specs} for c in _COMMANDS.values()))
    tables = set(_COMMANDS) | {section, *inherits}
    top = {_key(k): v for k, v in data.items() if not isinstance(v, dict)}
    unknown = sorted(set(top) - everyone)
    if unknown:
        named = ", ".join(f"{key!r}{_did_you_mean(key, everyone)}" for key in unknown)
        raise ConfigError(f"config file {path}: unknown setting(s) {named}: no command has them")
    strange = sorted(name for name, value in data.items() if isinstance(value, dict) and name not in tables)
    if strange:
        named = ", ".join(f"[{name}]{_did_you_mean(name, tables)}" for name in strange)
        raise ConfigError(f"config file {path}: unknown table(s) {named}; tables are named after the "
                          f"commands: {', '.join(f'[{t}]' for t in sorted(tables))}")
    values = {k: _check_toml_value(mine[k], v, f"config file {path}") for k, v in top.items() if k in mine}
    for table in (*inherits, section):
        for raw, value in data.get(table, {}).items():
            key, where = _key(raw), f"config file {path}, [{table}]"
            if key in mine:
                values[key] = _check_toml_value(mine[key], value, where)
            elif table == section:
                others = [o for o in _owners(key) if o != section]
                hint = (f": it is a setting of {', '.join(others)} (put it in [{others[0]}] or at the top level)"
                        if others else _did_you_mean(key, mine))
                raise ConfigError(f"{where}: unknown setting {key!r} for {section}{hint}")
    return values


def _key(raw: str) -> str:
    return raw.replace("-", "_")


def resolve_settings(
    flags: Mapping[str, Any],
    specs: Sequence[Setting],
    *,
    section: str,
    inherits: Sequence[str] = (),
    config_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Settings:
    """Apply the precedence rule for the command whose table is ``section`` (``inherits``: the
    tables it reads first). ``flags`` holds None (or an empty tuple) for flags not given."""
    env = os.environ if env is None else env
    if config_file is None:
        implicit = Path(cwd or os.getcwd()) / DEFAULT_CONFIG_FILE
        config_file = implicit if implicit.is_file() else None
    from_file = read_config_file(config_file, section, specs, inherits) if config_file else {}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for spec in specs:
        flag = flags.get(spec.name)
        if flag is not None and flag != () and not spec.secret:
            values[spec.name] = list(flag) if isinstance(flag, tuple) else flag
            origins[spec.name] = "flag"
        elif spec.name in from_file:
            values[spec.name] = from_file[spec.name]
            origins[spec.name] = "config"
        elif spec.env_var in env:
            values[spec.name] = _parse_env(spec, env[spec.env_var], spec.env_var)
            origins[spec.name] = "env"
        else:
            values[spec.name] = list(spec.default) if isinstance(spec.default, (list, tuple)) else spec.default
            origins[spec.name] = "default"
    if values.get("target") is not None and values["target"] not in TARGETS:
        raise ConfigError(f"unknown target {values['target']!r}; choose one of {', '.join(TARGETS)}")
    return Settings(values, specs, origins)


def store_target(settings: Settings) -> StoreTarget:
    """Map settings to the target's options (embedded stores and artifacts under ``data_dir`` by default)."""
    return locate(settings.target, settings)
