"""The deploy files (Docker, compose, Kubernetes, systemd) and the examples agree with the real tools and CLIs."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from clip_ingest.connectors.cli.ingest import INGEST_SETTINGS
from clip_ingest.connectors.cli.clip_ingest import main as ingest_group
from clip_ingest.connectors.cli.ingest import main as ingest_main
from clip_ingest.connectors.cli.search import main as search_main
from clip_ingest.connectors.config import COMMON_SETTINGS, resolve_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
YAML_FILES = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
K8S_FILES = sorted((DEPLOY / "kubernetes").glob("*.yaml")) + sorted((DEPLOY / "kubernetes" / "bulk").glob("*.yaml"))
COMPOSE = DEPLOY / "docker" / "compose.yaml"
SYSTEMD = DEPLOY / "systemd"
#: the image's ENTRYPOINT (deploy/docker/Dockerfile): what runs when only args/command are given
IMAGE_ENTRYPOINT = "clip-ingest"

COMMAND = re.compile(r"(?<![\w-])clip-(ingest|search)(?![\w-])(?:[ \t]+(migrate|status|quarantine|serve|duplicates|review)\b)?")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: where one shell command ends: a newline, ; && || | or the next clip-* command
COMMAND_END = re.compile(r"\n|;|&&|\|\||\||(?<![\w-])clip-(?:ingest|search|model)(?![\w-])")


def test_there_are_deploy_files():
    assert len(YAML_FILES) >= 4 and K8S_FILES and (DEPLOY / "docker" / "Dockerfile").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


def test_kubernetes_manifests_validate_strictly():
    proc = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", *map(str, K8S_FILES)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kinds = {d["kind"] for path in K8S_FILES for d in yaml.safe_load_all(path.read_text()) if d}
    assert {"CronJob", "Job", "PersistentVolumeClaim", "Deployment", "Service"} <= kinds


def test_dockerfile_passes_hadolint():
    proc = subprocess.run([str(VENV_BIN / "hadolint"), str(DEPLOY / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


def test_compose_file():
    """``docker compose config`` where it works; otherwise the structure it would check, checked here."""
    if _docker_compose_works():
        proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    compose = yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<: *ingest-image` merges
    services, volumes = compose["services"], compose.get("volumes") or {}
    assert {"qdrant", "ingester", "search", "serve"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name}: no image or build"
        depends = service.get("depends_on") or []
        assert set(depends) <= set(services), f"{name}: depends on unknown services {set(depends) - set(services)}"
        if isinstance(depends, dict):
            assert all(c.get("condition") in ("service_started", "service_healthy", "service_completed_successfully")
                       for c in depends.values()), name
            assert all(services[d].get("healthcheck") for d, c in depends.items() if c["condition"] == "service_healthy")
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in volumes, f"{name}: named volume {source!r} is not declared"
        for port in service.get("ports") or []:  # published on the loopback interface unless SERVE_BIND says otherwise
            assert re.fullmatch(r"\$\{SERVE_BIND:-127\.0\.0\.1\}:\d+:\d+", str(port)), f"{name}: port {port!r}"
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"serve"}, "only serve is published; the databases stay on the compose network"
    serve = services["serve"]
    assert serve["entrypoint"][:2] == ["clip-search", "serve"]
    assert serve["entrypoint"][serve["entrypoint"].index("--host") + 1] == "0.0.0.0"
    port = serve["entrypoint"][serve["entrypoint"].index("--port") + 1]
    assert serve["ports"] == [f"${{SERVE_BIND:-127.0.0.1}}:{port}:{port}"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(serve["healthcheck"]["test"])
    assert "${IMAGES_DIR:-./images}:/images:ro" in serve["volumes"] and "/images" in services["ingester"]["command"][0]
    ingester = services["ingester"]
    assert ingester["build"]["dockerfile"] == "deploy/docker/Dockerfile" and ingester["build"]["target"] == "ingest"
    assert (COMPOSE.parent / ingester["build"]["context"] / ingester["build"]["dockerfile"]).resolve().is_file()


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text().replace("\\\n", " "))
    return parser


def test_systemd_units_have_the_expected_keys():
    service = _unit(SYSTEMD / "clip-ingest.service")
    assert {"Unit", "Service"} <= set(service.sections())
    assert service["Unit"]["Description"]
    assert service["Service"]["Type"] == "oneshot"
    assert COMMAND.search(service["Service"]["ExecStart"].split()[0])
    assert "3" in service["Service"]["SuccessExitStatus"].split(), "exit 3 (some files failed) is not a failure"
    timer = _unit(SYSTEMD / "clip-ingest.timer")
    assert {"Unit", "Timer", "Install"} <= set(timer.sections())
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Unit"] == "clip-ingest.service"
    assert timer["Install"]["WantedBy"] == "timers.target"
    config_arg = re.search(r"--config\s+(\S+)", service["Service"]["ExecStart"]).group(1)
    assert Path(config_arg).name == "clip-ingest.toml", "the unit reads the shipped config file"


def test_systemd_config_loads_without_unknown_keys():
    settings = resolve_settings(
        {}, COMMON_SETTINGS + INGEST_SETTINGS, section="ingest", config_file=SYSTEMD / "clip-ingest.toml", env={}
    )
    assert settings.origins["sources"] == "config" and settings.sources
    assert settings.origins["target"] == "config"


# -- every --flag used in deploy files and examples is a real option of the command it is given to
def _help_flags(command) -> set[str]:
    result = CliRunner().invoke(command, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return set(FLAG.findall(result.output))


def _invocations(text: str) -> list[tuple[str, set[str]]]:
    """``(command, flags)`` for each clip-ingest / clip-search invocation in shell-like ``text``."""
    text = text.replace("\\\n", " ")
    found = []
    for match in COMMAND.finditer(text):
        rest = text[match.end():]
        end = COMMAND_END.search(rest)
        command = f"clip-{match.group(1)}" + (f" {match.group(2)}" if match.group(2) else "")
        found.append((command, set(FLAG.findall(rest[: end.start()] if end else rest))))
    return found


def _argv_text(command: list | str | None, args: list | str | None) -> str:
    """An entrypoint/command + args pair of a container as one command line (the image entrypoint if none)."""
    def words(value):
        return [] if value is None else [value] if isinstance(value, str) else [str(v) for v in value]

    head = words(command) or [IMAGE_ENTRYPOINT]
    if head[:2] == ["/bin/sh", "-c"]:
        return " ".join(head[2:] + words(args))
    return " ".join(head + words(args))


def _container_command_lines() -> list[tuple[str, str]]:
    """``(where, command line)`` of every container that runs the clip-ingest image."""
    lines = []
    for path in K8S_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {})
            pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                lines.append((f"{path.name}:{container['name']}", _argv_text(container.get("command"), container.get("args"))))
    for name, service in yaml.safe_load(COMPOSE.read_text())["services"].items():
        if service.get("image", "").startswith("clip-ingest"):
            lines.append((f"compose:{name}", _argv_text(service.get("entrypoint"), service.get("command"))))
    return lines


def _text_sources() -> list[Path]:
    return [SYSTEMD / "clip-ingest.service", SYSTEMD / "clip-search.service", *sorted((REPO / "examples").glob("*.py")), *sorted((REPO / "examples").glob("*.sh"))]


def test_every_flag_used_exists_in_the_cli():
    known = {"clip-ingest": _help_flags(ingest_main), "clip-search": _help_flags(search_main)}
    for name, group in (("clip-ingest", ingest_group), ("clip-search", search_main)):
        known.update({f"{name} {sub}": _help_flags(command) for sub, command in group.commands.items()
                      if sub != group.default})
    assert {"--target", "--collection", "--prune", "--summary"} <= known["clip-ingest"]
    assert {"--text", "--like", "--filter"} <= known["clip-search"]
    uses = [(where, line) for where, line in _container_command_lines()]
    uses += [(str(path.relative_to(REPO)), path.read_text()) for path in _text_sources()]
    checked, problems = 0, []
    for where, text in uses:
        for command, flags in _invocations(text):
            checked += len(flags)
            problems += [f"{where}: {command} {flag}" for flag in sorted(flags - known[command])]
    assert not problems, "flags the CLI does not have:\n" + "\n".join(problems)
    assert checked >= 30, f"only {checked} flags found: the extraction is broken"


def test_flag_extraction_finds_wrong_flags():
    """The extraction itself: commands, continuations and command ends."""
    text = ("clip-ingest --target qdrant \\\n  --bogus /x; clip-search --text a && clip-model eval --model m\n"
            "/opt/clip-ingest-data --nope; clip-ingest quarantine --failed")
    assert _invocations(text) == [("clip-ingest", {"--target", "--bogus"}), ("clip-search", {"--text"}),
                                  ("clip-ingest quarantine", {"--failed"})]
    assert _argv_text(None, ["--prune", "/images"]) == "clip-ingest --prune /images"
    assert _argv_text(["/bin/sh", "-c"], ["exec clip-search --like x"]) == "exec clip-search --like x"


def test_the_rayjob_runs_a_valid_clip_ingest_command_in_valid_pods(tmp_path):
    import shlex

    (job,) = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "kuberay" / "rayjob.yaml").read_text()) if d]
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "clip-ingest" and argv[argv.index("--executor") + 1] == "ray"
    ingest_main.make_context("clip-ingest", argv[1:])  # every option exists and parses (raises otherwise)
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    pods = []
    for i, template in enumerate(templates):  # the CRD embeds plain pod templates: validate them as Pods
        pod = tmp_path / f"pod-{i}.yaml"
        pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"}, **template}))
        pods.append(str(pod))
    proc = subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", *pods], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
