"""systemd, cron and Ray recipes read the way their platform reads them: ``systemd-analyze verify``
on the units, each exit code's fate derived from the unit, from the real cron wrapper and from the
RayJob, compared with the table of docs/deployment.md; the documented Debian install steps match
the units; the Ray image stage carries what KubeRay needs at the version the RayJob names."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

from deploy_table import DOC, EXIT_CODES, documented

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
RAYJOB = REPO / "deploy" / "kubernetes" / "kuberay" / "rayjob.yaml"
CRON = REPO / "examples" / "cron_alert.sh"
UNITS = ("clip-ingest.service", "clip-ingest.timer", "clip-search.service")
#: where the units expect the virtual environment (the install steps create it)
INSTALL_BIN = "/opt/clip-ingest/bin/"
VENV_BIN = Path(sys.executable).parent


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((SYSTEMD / name).read_text().replace("\\\n", " "))
    return parser


# -- systemd
def test_systemd_analyze_verify_accepts_the_units_without_a_warning(tmp_path):
    """verify checks every directive and that each command exists: the copies run this checkout's
    virtual environment where an install has /opt/clip-ingest (the same commands)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (apt-get install systemd): the units cannot be verified"
    for name in UNITS:
        (tmp_path / name).write_text((SYSTEMD / name).read_text().replace(INSTALL_BIN, f"{VENV_BIN}/"))
    proc = subprocess.run([analyze, "verify", *(str(tmp_path / name) for name in UNITS)], capture_output=True, text=True)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr
    broken = tmp_path / "broken.service"  # the check itself: a directive systemd ignores is reported
    broken.write_text((tmp_path / "clip-ingest.service").read_text().replace("RestartPreventExitStatus=2", "RestartPreventExitStatus=x"))
    proc = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert "Failed to parse" in proc.stderr


def systemd_fate(service: configparser.ConfigParser, code: int) -> str:
    """What systemd does when the oneshot's ExecStart exits ``code``: done, retried or failed."""
    section = service["Service"]
    if code == 0 or str(code) in section.get("SuccessExitStatus", "").split():
        return "done"
    prevented = section.get("RestartPreventExitStatus", "").split()
    if section.get("Restart", "no") in ("on-failure", "always", "on-abnormal") and str(code) not in prevented:
        return "retried"
    return "failed"


def test_each_exit_code_does_what_the_docs_promise_under_the_systemd_timer():
    service = unit("clip-ingest.service")
    derived = {code: systemd_fate(service, code) for code in EXIT_CODES}
    assert derived == documented("systemd timer")
    assert derived[3] == "done" and derived[1] == "retried" and derived[2] == "failed"
    assert service["Service"]["Type"] == "oneshot" and unit("clip-ingest.timer")["Timer"]["Unit"] == "clip-ingest.service"
    assert "--metrics-file" in service["Service"]["ExecStart"]


def test_the_serve_unit_runs_clip_search_serve_on_the_documented_interface():
    serve = unit("clip-search.service")
    argv = shlex.split(serve["Service"]["ExecStart"])
    assert argv[0] == f"{INSTALL_BIN}clip-search" and argv[1] == "serve"
    config = tomllib.loads((SYSTEMD / "clip-ingest.toml").read_text())
    assert argv[argv.index("--config") + 1] == "/etc/clip-ingest/clip-ingest.toml"
    assert config["serve"]["host"] == "127.0.0.1"
    assert f"127.0.0.1:{config['serve']['port']}" in DOC.read_text()
    assert serve["Service"]["Restart"] == "on-failure" and serve["Install"]["WantedBy"] == "multi-user.target"


def test_the_documented_debian_install_creates_what_the_units_use():
    steps = DOC.read_text().split("## systemd on a fresh Debian", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in steps.replace("\\\n", " ").splitlines() if line.strip()]
    for name in ("clip-ingest.service", "clip-search.service"):
        section = unit(name)["Service"]
        user = section["User"]
        assert any(c[:2] == ["sudo", "useradd"] and c[-1] == user for c in commands), f"{name}: no useradd {user}"
        assert section["ExecStart"].startswith(INSTALL_BIN)
        assert ["sudo", "python3", "-m", "venv", INSTALL_BIN.rstrip("/").removesuffix("/bin")] in commands
        env_file = section["EnvironmentFile"].lstrip("-")
        assert any(c[:2] == ["sudo", "install"] and c[-1] == env_file for c in commands)
        config = re.search(r"--config (\S+)", section["ExecStart"]).group(1)
        assert any(c[:2] == ["sudo", "install"] and c[-1] == config for c in commands)
    installed = next(c for c in commands if c[:2] == ["sudo", "install"] and c[-1] == "/etc/systemd/system/")
    assert {Path(p).name for p in installed if p.startswith("deploy/systemd/")} == set(UNITS)
    assert ["sudo", "apt-get", "install", "-y", "python3-venv"] in commands  # Debian's python3 has no venv module without it


# -- cron: the real wrapper around a stand-in clip-ingest that exits each code
def cron_fate(tmp_path: Path, code: int) -> str:
    stand_in = tmp_path / f"clip-ingest-{code}"
    stand_in.write_text(f"#!/bin/sh\nexit {code}\n")
    stand_in.chmod(0o755)
    alerts = tmp_path / f"alerts-{code}"
    env = {"PATH": os.environ["PATH"], "CLIP_INGEST_BIN": str(stand_in),
           "CLIP_INGEST_ALERT_CMD": f'echo "$CLIP_INGEST_EXIT_CODE" >> {alerts}'}
    proc = subprocess.run(["bash", str(CRON), "--config", "x.toml"], env=env, capture_output=True, text=True, timeout=30)
    alerted = alerts.exists() and alerts.read_text().split() == [str(code)]
    if proc.returncode != 0:
        assert proc.returncode == code and alerted and proc.stderr, (code, proc.stderr)  # cron mails stderr
        return "failed"
    return "alert" if alerted else "done"


def test_each_exit_code_does_what_the_docs_promise_under_cron(tmp_path):
    assert {code: cron_fate(tmp_path, code) for code in EXIT_CODES} == documented("cron")


# -- Ray
def test_each_exit_code_does_what_the_docs_promise_for_a_ray_job():
    (job,) = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    argv = shlex.split(job["spec"]["entrypoint"])

    def fate(code: int) -> str:  # a RayJob fails on any non-zero driver exit and runs again up to backoffLimit
        if code == 0 or (code == 3 and "--failed-files-ok" in argv):
            return "done"
        return "retried" if job["spec"].get("backoffLimit", 0) > 0 else "failed"

    assert {code: fate(code) for code in EXIT_CODES} == documented("Ray job")


def dockerfile_stages() -> dict[str, list[str]]:
    """``{stage name: its instructions}`` (continuation lines joined, comments dropped)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
        if match:
            current = stages.setdefault(match.group(2), [line])
        else:
            current.append(line)
    return stages


def test_the_ray_image_has_what_kuberay_needs_at_the_version_the_rayjob_names():
    stages = dockerfile_stages()  # hadolint checks every stage: tests/deploy/test_deploy.py
    assert list(stages) == ["ingest", "ray", "default"]
    assert list(stages)[-1] != "ray" and stages[list(stages)[-1]][0].split()[1] == "ingest", \
        "a plain docker build must make the ingest image"
    ray = stages["ray"]
    assert ray[0].split()[1] == "ingest"
    (version,) = [line.split("=", 1)[1] for line in ray if line.startswith("ARG RAY_VERSION=")]
    installs = [line for line in ray if line.startswith("RUN") and "pip install" in line]
    pinned = [Requirement(w.strip('"').replace("${RAY_VERSION}", version)) for line in installs
              for w in line.split() if w.strip('"').startswith("ray[")]
    assert len(pinned) == 1 and {"default", "data"} <= pinned[0].extras and str(pinned[0].specifier) == f"=={version}"
    assert any("apt-get install" in line and re.search(r"\bwget\b", line) for line in ray), "KubeRay's probes call wget"
    (job,) = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == version
    images = {c["image"] for spec in [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
              for c in spec["template"]["spec"]["containers"]}
    assert len(images) == 1 and "ray" in images.pop().rsplit("/", 1)[1]
    assert f'pip install "ray[default]=={version}"' in DOC.read_text(), "the documented client is another Ray version"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    (extra,) = [Requirement(r) for r in project["project"]["optional-dependencies"]["ray"] if r.startswith("ray")]
    assert extra.specifier.contains(version), f"the ray extra {extra} excludes the image's Ray {version}"
