"""One config file for every command: the layout rule, strict TOML types, and every shipped
config (deploy/, examples/, the TOML blocks of README.md and docs/) read by every command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import clip_ingest.connectors.cli  # noqa: F401  (registers every command's settings)
from clip_ingest.connectors.cli.clip_ingest import main as ingest_main
from clip_ingest.connectors.cli.common import setting_option
from clip_ingest.connectors.cli.ingest import RUN_SETTINGS
from clip_ingest.connectors.cli.search import main as search_main
from clip_ingest.connectors.backends import registry
from clip_ingest.connectors.ingest.metadata import MetadataLimits
from clip_ingest.connectors.config import COMMON_SETTINGS, ConfigError, registered_commands, resolve_settings
from conftest import TINY_SPEC

REPO = Path(__file__).resolve().parents[2]
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.M | re.S)
COMMANDS = ("ingest", "migrate", "search", "serve", "duplicates", "review")


def resolve(command: str, config: Path | None, env: dict[str, str] | None = None, **flags):
    c = registered_commands()[command]
    return resolve_settings(flags, c.specs, section=c.name, inherits=c.inherits, config_file=config, env=env or {})


def shipped_configs(tmp_path: Path) -> list[tuple[str, Path]]:
    """Every shipped config file, and every TOML block of the docs written to a file of its own."""
    found = [(str(p.relative_to(REPO)), p) for folder in ("deploy", "examples") for p in sorted((REPO / folder).rglob("*.toml"))]
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for n, block in enumerate(TOML_BLOCK.findall(doc.read_text(encoding="utf-8"))):
            path = tmp_path / f"{doc.stem}-{n}.toml"
            path.write_text(block, encoding="utf-8")
            found.append((f"{doc.name} block {n}", path))
    return found


def expected_values(data: dict, command: str) -> dict:
    """What the file says to ``command``: its top-level keys, then each table it reads, in order."""
    c = registered_commands()[command]
    layers = [{k: v for k, v in data.items() if not isinstance(v, dict)}, *(data.get(t, {}) for t in (*c.inherits, c.name))]
    mine = {s.name for s in c.specs}
    return {k.replace("-", "_"): v for layer in layers for k, v in layer.items() if k.replace("-", "_") in mine}


def test_every_command_is_registered_and_config_imports_no_command():
    assert set(COMMANDS) <= set(registered_commands())
    assert registered_commands()["migrate"].inherits == ("ingest",)
    code = "import sys, clip_ingest.connectors.config; print([m for m in sys.modules if '.connectors.cli' in m])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_shipped_configs_resolve_for_every_command_and_mean_what_they_say(tmp_path):
    configs = shipped_configs(tmp_path)
    assert any(name == "deploy/systemd/clip-ingest.toml" for name, _ in configs)
    assert any(name.startswith("configuration.md") for name, _ in configs)
    for name, path in configs:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for command in COMMANDS:
            settings = resolve(command, path)
            specs = {s.name: s for s in registered_commands()[command].specs}
            for key, value in expected_values(data, command).items():
                assert settings[key] == value and settings.origins[key] == "config", (name, command, key)
                assert isinstance(settings[key], specs[key].type), (name, command, key)
    systemd = resolve("ingest", REPO / "deploy/systemd/clip-ingest.toml")
    assert systemd.prune is True and systemd.sources == ["/srv/photos"] and systemd.model == "starter"


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """A config file holding every command's settings (some at the top level) over a real folder."""
    from imagegen import write_shape_folder

    root = tmp_path_factory.mktemp("one-file")
    folder = write_shape_folder(root / "photos", n=6)
    config = root / "clip-ingest.toml"
    config.write_text(f"""
target = "qdrant-edge"
data_dir = "{root / 'data'}"
collection = "shapes"
model = "{TINY_SPEC}"
device = "cpu"
sources = ["{folder}"]   # ingestion's, at the top level: the other commands ignore it
prune = true

[ingest]
workers = 2
batch_size = 4

[migrate]
batch_size = 2

[search]
k = 3

[serve]
port = 0

[duplicates]
batch_size = 4
""", encoding="utf-8")
    return config


def test_one_file_drives_every_command(one_file):
    result = CliRunner().invoke(ingest_main, ["--config", str(one_file), "-q"])
    assert result.exit_code == 0, result.output
    found = CliRunner().invoke(search_main, ["--config", str(one_file), "--text", "a red circle", "--json"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["hits"]) == 3  # k from [search]
    groups = CliRunner().invoke(search_main, ["duplicates", "--config", str(one_file), "--threshold", "0.99", "--json"])
    assert groups.exit_code == 0, groups.output
    status = CliRunner().invoke(ingest_main, ["migrate", "--config", str(one_file), "--status"])
    assert status.exit_code == 0, status.output
    assert resolve("serve", one_file).port == 0 and resolve("serve", one_file).batch_size == 64  # [ingest]'s is not serve's
    assert (resolve("migrate", one_file).workers, resolve("migrate", one_file).batch_size) == (2, 2)  # [ingest], then [migrate]


def test_a_wrong_type_in_the_file_is_a_usage_error_naming_key_file_and_type(tmp_path, shape_folder):
    config = tmp_path / "c.toml"
    config.write_text('prune = "yes"\n')
    result = CliRunner().invoke(ingest_main, ["--config", str(config), "--model", TINY_SPEC, str(shape_folder)])
    assert result.exit_code == 2
    assert f"config file {config}: 'prune' must be true or false (a TOML boolean), not the string 'yes'" in result.output


@pytest.mark.parametrize("text, command, message", [
    ("collection = 3\n", "search", "'collection' must be a string (in quotes), not the number 3"),
    ('sources = "/srv/photos"\n', "ingest", "'sources' must be a list of strings"),
    ("sources = [1, 2]\n", "ingest", "'sources' must be a list of strings"),
    ("[ingest]\nworkers = 2.5\n", "ingest", "[ingest]: 'workers' must be an integer, not the number 2.5"),
    ("[ingest]\nlock_timeout = true\n", "ingest", "'lock_timeout' must be a number, not the boolean True"),
    ("[serve]\nport = \"80\"\n", "serve", "[serve]: 'port' must be an integer, not the string '80'"),
    ("prnue = true\n", "search", "unknown setting(s) 'prnue' (did you mean 'prune'?): no command has them"),
    ("[ingset]\nprune = true\n", "search", "unknown table(s) [ingset] (did you mean 'ingest'?)"),
    ("[search]\nprune = true\n", "search", "[search]: unknown setting 'prune' for search: it is a setting of ingest, migrate"),
    ("[serve]\nprot = 80\n", "serve", "[serve]: unknown setting 'prot' for serve (did you mean 'port'?)"),
])
def test_mistakes_name_the_key_and_the_file(tmp_path, text, command, message):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        resolve(command, config)
    assert str(config) in str(caught.value) and message in str(caught.value)


def test_other_commands_keys_and_tables_are_left_to_them(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('sources = ["/a"]\nk = 5\n[search]\nk = 7\n[ingest]\nprune = true\nlock_timeout = 5\n[serve]\nport = 81\n')
    ingest = resolve("ingest", config)
    assert (ingest.sources, ingest.prune, ingest.lock_timeout) == (["/a"], True, 5.0) and isinstance(ingest.lock_timeout, float)
    assert resolve("search", config).k == 7 and "prune" not in resolve("search", config)
    assert resolve("serve", config).port == 81


def test_secrets_in_the_file_are_never_echoed(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("qdrant_api_key = 123456789\n")
    with pytest.raises(ConfigError, match="'qdrant_api_key' must be a string") as caught:
        resolve("search", config)
    assert "123456789" not in str(caught.value)


def test_the_environment_keeps_its_string_parsing(tmp_path):
    settings = resolve("ingest", None, {"CLIP_INGEST_PRUNE": "yes", "CLIP_INGEST_SOURCES": "/a, /b", "CLIP_INGEST_WORKERS": "3"})
    assert (settings.prune, settings.sources, settings.workers) == (True, ["/a", "/b"], 3)
    with pytest.raises(ConfigError, match="CLIP_INGEST_PRUNE must be true or false"):
        resolve("ingest", None, {"CLIP_INGEST_PRUNE": "perhaps"})


def test_the_reference_lists_every_setting():
    reference = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = sorted({s.name for c in registered_commands().values() for s in c.specs if f"`{s.name}`" not in reference})
    assert not missing, f"docs/configuration.md does not describe {missing}"
    assert "docs/configuration.md" in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("group", [ingest_main, search_main], ids=["clip-ingest", "clip-search"])
def test_each_common_setting_is_one_generated_flag_and_secrets_are_none(group):
    """The flags come from the settings (backends' included): help, choices and minimum as declared,
    default None (not given), and no flag for a secret."""
    params = {p.name: p for p in group.commands[group.default].params}
    assert {s.name for s in registry.SETTINGS} <= {s.name for s in COMMON_SETTINGS}
    assert list(params["target"].type.choices) == list(registry.TARGETS) + ["parquet"]
    for setting in COMMON_SETTINGS:
        if setting.secret:
            assert setting.name not in params
            continue
        option = params[setting.name]
        assert (option.opts, option.help, option.default) == ([setting.flag], setting.help_text, None)
        assert list(getattr(option.type, "choices", setting.choices)) == list(setting.choices)
        assert getattr(option.type, "min", None) == setting.minimum


#: each registered command's click command, and its settings that are no option: the SOURCES
#: argument, the metadata limits (config file and environment only), secrets, and for migrate the
#: ingestion run's own settings (config file and environment only)
NOT_OPTIONS = {"sources", *(f"metadata_{f.name}" for f in fields(MetadataLimits))}
COMMAND_OPTIONS = {
    "ingest": (ingest_main.commands["run"], NOT_OPTIONS),
    "migrate": (ingest_main.commands["migrate"], NOT_OPTIONS | {s.name for s in RUN_SETTINGS}),
    "search": (search_main.commands["query"], set()),
    "duplicates": (search_main.commands["duplicates"], set()),
    "review": (search_main.commands["review"], set()),
    "serve": (search_main.commands["serve"], {"api_key"}),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_setting_is_one_generated_option(name):
    """A command's own settings are its options as generated from their declaration: flag, type,
    range, choices, path, metavar, help (with the default) and default None (not given)."""
    command, no_option = COMMAND_OPTIONS[name]
    params = {p.name: p for p in command.params if isinstance(p, click.Option)}
    settings = registered_commands()[name].settings
    assert {s.name for s in settings if s.name not in params} == no_option
    for setting in settings:
        if setting.name in no_option:
            continue
        declared = setting_option(setting)(lambda: None).__click_params__[0]
        option = params[setting.name]
        assert option.help == setting.help_text and option.metavar == setting.metavar
        assert option.to_info_dict() == declared.to_info_dict()
