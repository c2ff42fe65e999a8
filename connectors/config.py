"""Settings shared by the command-line tools, with one precedence rule.

``command-line flags > TOML config file > CLIP_INGEST_* environment > defaults``

The config file is ``--config FILE``, else ``./clip-ingest.toml`` when present.
Its top-level keys apply to every tool; a ``[ingest]`` or ``[search]`` table
overrides them for that tool. Keys may use ``-`` or ``_``. Each setting NAME can
also come from the environment variable ``CLIP_INGEST_NAME`` (upper case).
Secrets (``qdrant_api_key``, ``milvus_token``) are never flags: only the
environment or the config file, and they never appear in ``repr`` or summaries.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

ENV_PREFIX = "CLIP_INGEST_"
DEFAULT_CONFIG_FILE = "clip-ingest.toml"
DEFAULT_DATA_DIR = "clip-ingest-data"
TARGETS = ("qdrant", "qdrant-edge", "milvus", "parquet")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A config file or environment value is invalid (a usage error: exit code 2)."""


@dataclass(frozen=True)
class Setting:
    """One configurable value: its name (``snake_case``), type, default and whether it is a secret."""

    name: str
    type: type
    default: Any = None
    secret: bool = False
    help: str = ""

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


#: what computes the vectors (see :mod:`clip_ingest.connectors.runtime`)
RUNTIMES = ("torch", "onnx")
QUANTIZATIONS = ("none", "int8")

COMMON_SETTINGS: tuple[Setting, ...] = (
    Setting("target", str, "qdrant", help="qdrant, qdrant-edge, milvus or parquet (a portable artifact)"),
    Setting("out", str, None, help="folder of the parquet target (default DATA_DIR/parquet)"),
    Setting("collection", str, "images"),
    Setting("qdrant_url", str, None, help="Qdrant server URL (default: embedded local folder)"),
    Setting("qdrant_path", str, None, help="local Qdrant folder (default DATA_DIR/qdrant)"),
    Setting("milvus_uri", str, None, help="Milvus server URI or Milvus Lite file (default DATA_DIR/milvus.db)"),
    Setting("milvus_consistency", str, "Strong", help="consistency level of Milvus searches"),
    Setting("model", str, "starter", help="model spec (see clip_ingest.connectors.factory)"),
    Setting("device", str, "auto"),
    Setting("runtime", str, "torch", help="torch or onnx (ONNX Runtime)"),
    Setting("quantize", str, "none", help="none or int8 (ONNX Runtime only)"),
    Setting("data_dir", str, DEFAULT_DATA_DIR, help="where embedded stores and run files live"),
    Setting("qdrant_api_key", str, None, secret=True),
    Setting("milvus_token", str, None, secret=True),
)


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


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    """Convert an env string or a TOML value to the setting's type."""
    where = f"{origin} value for {setting.name!r}"
    if setting.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if setting.type is list:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{where} must be a list of strings, not {value!r}")
    if setting.type in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        try:
            return setting.type(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {'an integer' if setting.type is int else 'a number'}, not {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {value!r}")
    return value


def read_config_file(path: str | os.PathLike, section: str, known: Iterable[str]) -> dict[str, Any]:
    """Top-level keys of a TOML file merged with its ``[section]`` table; unknown keys are an error."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    known = set(known)
    tables = {k for k, v in data.items() if isinstance(v, dict)}
    merged = {k: v for k, v in data.items() if k not in tables}
    merged.update(data.get(section, {}))
    values = {k.replace("-", "_"): v for k, v in merged.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return values


def resolve_settings(
    flags: Mapping[str, Any],
    specs: Sequence[Setting],
    *,
    section: str,
    config_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Settings:
    """Apply the precedence rule. ``flags`` holds None (or an empty tuple) for flags not given."""
    env = os.environ if env is None else env
    if config_file is None:
        implicit = Path(cwd or os.getcwd()) / DEFAULT_CONFIG_FILE
        config_file = implicit if implicit.is_file() else None
    from_file = read_config_file(config_file, section, (s.name for s in specs)) if config_file else {}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for spec in specs:
        flag = flags.get(spec.name)
        if flag is not None and flag != () and not spec.secret:
            values[spec.name] = list(flag) if isinstance(flag, tuple) else flag
            origins[spec.name] = "flag"
        elif spec.name in from_file:
            values[spec.name] = _coerce(spec, from_file[spec.name], f"config file {config_file}")
            origins[spec.name] = "config"
        elif spec.env_var in env:
            values[spec.name] = _coerce(spec, env[spec.env_var], f"environment {spec.env_var}")
            origins[spec.name] = "env"
        else:
            values[spec.name] = list(spec.default) if isinstance(spec.default, (list, tuple)) else spec.default
            origins[spec.name] = "default"
    if values.get("target") is not None and values["target"] not in TARGETS:
        raise ConfigError(f"unknown target {values['target']!r}; choose one of {', '.join(TARGETS)}")
    return Settings(values, specs, origins)


@dataclass(frozen=True)
class StoreTarget:
    """Where a collection lives: the ``open_store`` arguments plus a secret-free description."""

    target: str
    options: Mapping[str, Any]
    location: str
    """Path or URL (credentials removed): names the lock file and goes into summaries."""
    embedded: bool


def store_target(settings: Settings) -> StoreTarget:
    """Map settings to the backend's ``open_store`` options (embedded stores under ``data_dir`` by default)."""
    data_dir = Path(settings.data_dir)
    target = settings.target
    if target == "qdrant" and settings.qdrant_url:
        options = {"url": settings.qdrant_url, "api_key": settings.qdrant_api_key}
        return StoreTarget(target, options, _strip_credentials(settings.qdrant_url), embedded=False)
    if target in ("qdrant", "qdrant-edge"):
        path = os.path.abspath(settings.qdrant_path or data_dir / target)
        return StoreTarget(target, {"path": path}, path, embedded=True)
    if target == "parquet":
        path = os.path.abspath(settings.out or data_dir / "parquet")
        return StoreTarget(target, {"path": path}, path, embedded=True)
    uri = settings.milvus_uri or str(data_dir / "milvus.db")
    server = "://" in uri
    location = _strip_credentials(uri) if server else os.path.abspath(uri)
    options = {
        "uri": uri if server else location, "token": settings.milvus_token,
        "search_consistency": settings.milvus_consistency,
    }
    return StoreTarget(target, options, location, embedded=not server)


def _strip_credentials(url: str) -> str:
    """``https://user:pw@host/x`` -> ``https://host/x``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
