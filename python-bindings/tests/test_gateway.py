"""shoal.Gateway against a real `shoal gateway serve` with the local backend."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"
ROOT = Path(__file__).resolve().parents[2]


def serve(shoal_bin: Path, config: Path) -> tuple[subprocess.Popen[str], str]:
    """Starts `shoal gateway serve --config config`; the process and the URL it printed."""
    process = subprocess.Popen(
        [shoal_bin, "gateway", "serve", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.startswith("shoal gateway listening on "), line
    return process, line.rsplit(" ", 1)[1]


@pytest.fixture
def gateway(shoal_bin: Path, tmp_path: Path) -> Iterator[str]:
    """A gateway for alice and bob (two workers each at most); yields its URL."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[gateway]
bind = "127.0.0.1:0"
data_dir = "{tmp_path / 'data'}"
check_interval = "0.2s"
[users.alice]
token = "{ALICE}"
[users.bob]
token = "{BOB}"
[limits]
clusters = 2
workers = 2
"""
    )
    process, url = serve(shoal_bin, config)
    assert url.startswith("http://"), url
    yield url
    # Stop whatever clusters a test left, then the gateway.
    for token in (ALICE, BOB):
        gw = shoal.Gateway(url, token=token)
        for cluster in gw.list():
            if cluster.state == "running":
                cluster.stop()
    process.terminate()
    process.wait(timeout=30)


def test_a_gateway_cluster_runs_queries_scales_and_stops(
    gateway: str, tmp_path: Path
) -> None:
    spec = tmp_path / "cluster.toml"
    spec.write_text('[groups.cpu]\nworkers = 1\nmemory = "512MiB"\n')
    gw = shoal.Gateway(gateway, token=ALICE)
    cluster = gw.create(spec)
    assert cluster.state == "running"
    assert cluster.groups["cpu"]["alive"] == 1
    with gw.connect(cluster.name) as s:
        assert s.sql("select count(*) as n from generate_series(1, 1000)").to_pandas()["n"][0] == 1000
    scaled = cluster.scale("cpu", 2)
    assert scaled.groups["cpu"]["alive"] == 2
    assert [c.name for c in gw.list()] == [cluster.name]
    assert cluster.stop().state == "stopped"


def test_the_gateway_s_refusals_are_input_errors(gateway: str) -> None:
    alice = shoal.Gateway(gateway, token=ALICE)
    cluster = alice.create({"groups": {"cpu": {"workers": 1, "memory": "256MiB"}}})
    with pytest.raises(shoal.InputError, match="at most 2 workers; this would make 3"):
        cluster.scale("cpu", 3)
    with pytest.raises(shoal.InputError, match=f"no cluster named {cluster.name}"):
        shoal.Gateway(gateway, token=BOB).get(cluster.name)
    with pytest.raises(shoal.InputError, match="unknown field `cores`"):
        alice.create({"groups": {"cpu": {"cores": 2}}})
    with pytest.raises(shoal.InputError, match="unknown token"):
        shoal.Gateway(gateway, token="nobody-0123456789").list()
    cluster.stop()
    with pytest.raises(shoal.InputError, match=f"cluster {cluster.name} is stopped"):
        alice.connect(cluster.name)


def test_the_openapi_file_matches_the_server(gateway: str) -> None:
    """schemathesis (from PyPI) checks the server against gateway/openapi.yaml: every
    response's status and body as documented, schema-valid requests accepted and invalid
    ones refused with a 4xx, no 5xx, auth required, and create -> get/scale/stop links.
    A stopped cluster stays listed (as stopped), so its use-after-delete check is off."""
    schemathesis = Path(sys.executable).parent / "schemathesis"
    run = subprocess.run(
        [
            schemathesis, "run", ROOT / "gateway" / "openapi.yaml",
            "--url", gateway,
            "--header", f"Authorization: Bearer {BOB}",
            "--checks", "all", "--exclude-checks", "use_after_free",
            "--max-examples", "50", "--seed", "1", "--workers", "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # The stateful phase followed create -> get/scale/stop with real clusters.
    links = re.search(r"API Links:\s+(\d+) covered", run.stdout)
    assert links and int(links.group(1)) > 0, run.stdout[-4000:]


def certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An authority (openssl) and a certificate it signs for 127.0.0.1: cert, key, CA."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert, key, csr = tmp_path / "api.pem", tmp_path / "api.key", tmp_path / "api.csr"
    ext = tmp_path / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    for args in (
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        + ["-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=test authority"],
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        + ["-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", cert, "-days", "2", "-extfile", ext],
    ):
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)
    return cert, key, ca


def test_a_tls_gateway_hands_out_tls_clusters(shoal_bin: Path, tmp_path: Path) -> None:
    cert, key, ca = certificates(tmp_path)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[gateway]
bind = "127.0.0.1:0"
data_dir = "{tmp_path / 'data'}"
tls_cert = "{cert}"
tls_key = "{key}"
cluster_tls = true
[users.alice]
token = "{ALICE}"
"""
    )
    process, url = serve(shoal_bin, config)
    try:
        assert url.startswith("https://127.0.0.1:"), url
        os.environ.pop("SHOAL_GATEWAY_CA", None)
        with pytest.raises(shoal.ShoalIOError, match="certificate"):
            shoal.Gateway(url, token=ALICE).list()
        gw = shoal.Gateway(url, token=ALICE, ca=str(ca))
        cluster = gw.create({"groups": {"cpu": {"workers": 1, "memory": "512MiB"}}})
        assert cluster.scheduler.startswith("https://127.0.0.1:")
        assert cluster.tls_ca is not None and cluster.tls_ca.startswith("-----BEGIN CERTIFICATE-----")
        with cluster.session() as s:
            assert s.sql("select 41 + 1 as x").to_pandas()["x"][0] == 42
        assert cluster.stop().state == "stopped"
    finally:
        # Whatever the test left running stops with the gateway's help first.
        for left in shoal.Gateway(url, token=ALICE, ca=str(ca)).list():
            if left.state == "running":
                left.stop()
        process.terminate()
        process.wait(timeout=30)
