"""The Kubernetes recipes read the way the API server, the Job controller and the kubelet read them:
valid on every supported version, what ``kubectl apply -f deploy/kubernetes/`` starts, each exit
code's fate under the pod failure policy (compared with the table of docs/deployment.md), every
claim and secret key defined, ReadWriteOnce claims shared on one node only, and the search
service's probes, host, port and mounts against the real app and CLI."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.cli.search import main as search_main
from deploy_table import DOC, EXIT_CODES, documented
from imagegen import write_shape_folder
from search_helpers import plant_shapes
from serve_helpers import running_server

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
VENV_BIN = Path(sys.executable).parent
#: Kubernetes releases the manifests must be valid on: upstream-supported in December 2026
#: (1.35-1.37) and the three before them, still run under managed extended support
SUPPORTED_VERSIONS = ("1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0")
SERVE_LABELS = {"app.kubernetes.io/name": "clip-ingest", "app.kubernetes.io/component": "serve"}
#: where the image's ingester reads the photos (the paths the collection stores)
IMAGES_PATH = "/images"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def applied_by_folder() -> list[dict[str, Any]]:
    """What ``kubectl apply -f deploy/kubernetes/`` applies: the folder's own files, not its subfolders."""
    return [d for path in sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml")) + sorted(K8S.glob("*.json"))
            for d in documents(path)]


def all_manifests() -> list[dict[str, Any]]:
    return [d for path in sorted(K8S.rglob("*.yaml")) for d in documents(path)]


def one(kind: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    (found,) = [d for d in (docs if docs is not None else all_manifests()) if d["kind"] == kind]
    return found


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """``(kind/name, pod spec)`` of every pod template, the RayJob's head and workers included."""
    for doc in all_manifests():
        spec, name = doc["spec"], f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "RayJob":
            cluster = spec["rayClusterSpec"]
            yield f"{name}/head", cluster["headGroupSpec"]["template"]["spec"]
            for group in cluster["workerGroupSpecs"]:
                yield f"{name}/{group['groupName']}", group["template"]["spec"]
        elif "jobTemplate" in spec:
            yield name, spec["jobTemplate"]["spec"]["template"]["spec"]
        elif "template" in spec:
            yield name, spec["template"]["spec"]


def argv(container: dict[str, Any]) -> list[str]:
    """The container's command line (the image's ENTRYPOINT is clip-ingest); ``sh -c`` scripts split."""
    words = [str(w) for w in (container.get("command") or ["clip-ingest"]) + (container.get("args") or [])]
    if words[:2] == ["/bin/sh", "-c"]:
        return shlex.split(" ".join(words[2:]).replace('"${JOB_COMPLETION_INDEX}', '"0'))
    return words


# -- validity and what one apply starts
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_manifests_validate_on_every_supported_kubernetes(version, tmp_path):
    known = {p.name for p in (VENV_BIN.parent / "lib").glob("python*/site-packages/kubernetes_validate/kubernetes-json-schema/*")}
    assert f"v{version}-standalone-strict" in known or f"v{version}-local-strict" in known, \
        f"kubernetes-validate has no schema for {version}: upgrade it"
    files = [p for p in sorted(K8S.rglob("*.yaml")) if "kuberay" not in p.parts]
    for i, (where, spec) in enumerate(pod_specs()):  # the RayJob CRD embeds pod templates: validate them as Pods
        if where.startswith("RayJob/"):
            pod = tmp_path / f"raypod-{i}.yaml"
            pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"}, "spec": spec}))
            files.append(pod)
    proc = subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", "-k", version, *map(str, files)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(files) >= 6


def test_applying_the_folder_starts_no_bulk_load():
    kinds = sorted(d["kind"] for d in applied_by_folder())
    assert kinds == ["CronJob", "Deployment", "PersistentVolumeClaim", "PersistentVolumeClaim",
                     "PersistentVolumeClaim", "Service"], kinds
    assert {d["kind"] for d in all_manifests()} >= {"Job", "RayJob"}  # the bulk loads exist, in subfolders


# -- exit codes: the Job controller's reading of podFailurePolicy, against the documented table
def kubernetes_fate(job_spec: dict[str, Any], container: dict[str, Any], code: int) -> str:
    """What the Job controller does when the container exits ``code``: done, retried or failed.
    ``--failed-files-ok`` turns 3 into 0 before Kubernetes sees it."""
    if code == 3 and "--failed-files-ok" in argv(container):
        code = 0
    if code == 0:
        return "done"
    for rule in job_spec.get("podFailurePolicy", {}).get("rules", []):
        match = rule.get("onExitCodes")
        if not match or match.get("containerName", container["name"]) != container["name"]:
            continue
        if (code in match["values"]) == (match["operator"] == "In"):
            return {"FailJob": "failed", "FailIndex": "failed", "Count": "retried", "Ignore": "loops"}[rule["action"]]
    limit = job_spec.get("backoffLimitPerIndex", job_spec.get("backoffLimit", 6))
    return "retried" if limit > 0 else "failed"


def test_each_exit_code_does_what_the_docs_promise_for_the_cronjob():
    cronjob = one("CronJob")
    job = cronjob["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    derived = {code: kubernetes_fate(job, container, code) for code in EXIT_CODES}
    assert derived == documented("Kubernetes CronJob")
    assert derived[3] == "done" and derived[1] == "retried" and derived[2] == "failed"
    # without the flag, 3 still ends the Job (never Ignore: a re-created pod fails the same file again)
    bare = {**container, "args": [a for a in container["args"] if a != "--failed-files-ok"]}
    assert kubernetes_fate(job, bare, 3) == "failed"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


@pytest.mark.parametrize("kind", ["CronJob", "Job"])
def test_no_exit_code_is_ignored_and_disruptions_are(kind):
    """``Ignore`` re-creates the pod without counting it: right for an evicted pod, a loop for an
    exit code. Both Jobs ignore the DisruptionTarget condition and no exit code."""
    doc = one(kind)
    job = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert not [r for r in rules if r["action"] == "Ignore" and "onExitCodes" in r]
    assert any(r["action"] == "Ignore" and {"type": "DisruptionTarget", "status": "True"} in r.get("onPodConditions", [])
               for r in rules)
    (container,) = job["template"]["spec"]["containers"]
    assert "--failed-files-ok" in argv(container)
    assert all(kubernetes_fate(job, container, code) != "loops" for code in EXIT_CODES)


# -- references: claims, secrets, storage
def test_every_claim_is_defined_and_read_write_once():
    claims = {d["metadata"]["name"]: d for d in applied_by_folder() if d["kind"] == "PersistentVolumeClaim"}
    used = {v["persistentVolumeClaim"]["claimName"] for _, spec in pod_specs() for v in spec.get("volumes", [])
            if "persistentVolumeClaim" in v}
    assert used == set(claims) == {"photos", "clip-ingest-state", "clip-ingest-model-cache"}
    assert all(c["spec"]["accessModes"] == ["ReadWriteOnce"] for c in claims.values())


def test_pods_sharing_a_read_write_once_claim_run_on_the_serve_node():
    serve = one("Deployment")
    assert serve["spec"]["template"]["metadata"]["labels"] == SERVE_LABELS
    assert serve["spec"]["strategy"]["type"] == "Recreate" and serve["spec"]["replicas"] == 1
    for where, spec in pod_specs():
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        if where.startswith(("Deployment/", "RayJob/")) or not claims & {"photos", "clip-ingest-model-cache"}:
            continue  # serve is the anchor; the RayJob needs many-node storage (documented)
        (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["labelSelector"]["matchLabels"] == SERVE_LABELS and term["topologyKey"] == "kubernetes.io/hostname", where


def test_every_secret_key_used_is_created_by_the_documented_command():
    lines = [line for line in DOC.read_text().replace("\\\n", " ").splitlines() if "kubectl create secret generic" in line]
    assert lines, "docs/deployment.md has no kubectl create secret command"
    name, *options = shlex.split(lines[0].split("kubectl create secret generic", 1)[1], comments=True)
    keys = {option.split("=")[1] for option in options if option.startswith("--from-literal=")}
    used_names, used_keys = set(), set()
    for _, spec in pod_specs():
        for container in spec["containers"]:
            used_names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used_names.add(ref["name"])
                    used_keys.add(ref["key"])
                    assert env["name"] == ref["key"]
    assert used_names == {name} and used_keys and used_keys <= keys
    assert not [d for d in all_manifests() if d["kind"] == "Secret"], "a Secret in the repository overwrites the real one"


def test_every_container_requests_resources():
    for where, spec in pod_specs():
        for container in spec["containers"]:
            requests = container["resources"]["requests"]
            assert requests.get("cpu") and requests.get("memory"), where


# -- the search service
def test_serve_listens_on_all_interfaces_at_the_port_its_probes_and_service_use():
    serve, service = one("Deployment"), one("Service")
    (container,) = serve["spec"]["template"]["spec"]["containers"]
    words = argv(container)
    assert words[:2] == ["clip-search", "serve"]
    context = search_main.commands["serve"].make_context("serve", words[2:])  # every flag exists and parses
    (port,) = container["ports"]
    assert context.params["host"] == "0.0.0.0" and context.params["port"] == port["containerPort"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in (port["name"], port["containerPort"]), probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert service["spec"]["selector"] == SERVE_LABELS
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    keyed = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert "CLIP_INGEST_API_KEY" in keyed


def test_the_probes_answer_on_the_real_app_without_the_api_key(tmp_path, tiny_embedder):
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    paths = {container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    store = open_store("qdrant-edge", "shapes", path=str(tmp_path / "edge"))
    plant_shapes(store, tiny_embedder, write_shape_folder(tmp_path / "photos", n=2))
    with running_server(store, tiny_embedder, api_key="k" * 32) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/v1/info").status_code == 401  # the key is on, and probes send none
            answers = {path: client.get(path).status_code for path in paths}
    assert answers == {"/healthz": 200, "/readyz": 200}


def test_serve_and_the_ingesters_see_the_photos_at_the_same_path_read_only():
    for where, spec in pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            mounts = [m for m in container.get("volumeMounts", [])
                      if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == "photos"]
            assert [(m["mountPath"], m.get("readOnly")) for m in mounts] == [(IMAGES_PATH, True)], where
            assert volumes[mounts[0]["name"]]["persistentVolumeClaim"]["readOnly"] is True
    cronjob = one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert argv(cronjob)[-1] == IMAGES_PATH  # the source, so the stored paths are /images/...
