"""Fixtures: the `shoal` binary the workspace built, TPC-H SF 0.01 data, and a session
that is embedded or on a real cluster (a `shoal local` scheduler with two worker
processes on 127.0.0.1); every test that takes `session` runs on both."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SHOAL_SHARED_DIR", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shoal_bin() -> Path:
    """The CLI built by `cargo build --workspace --tests` (python-bindings/develop.sh)."""
    path = ROOT / "target" / "debug" / "shoal"
    assert path.exists(), f"{path} is missing: run python-bindings/develop.sh first"
    return path


@pytest.fixture(scope="session")
def tpch_dir(shoal_bin: Path) -> Path:
    """TPC-H at scale factor 0.01, generated once per machine under target/."""
    target = ROOT / "target" / "python-tests" / "tpch-sf0.01"
    if not (target / "lineitem.parquet").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        subprocess.run(
            [shoal_bin, "gen", "tpch", "--scale-factor", "0.01", "--output", staging / "d"],
            check=True,
            capture_output=True,
        )
        try:
            (staging / "d").rename(target)
        except OSError:
            pass  # another test process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def cluster(shoal_bin: Path) -> Iterator[str]:
    """A scheduler and two one-slot workers as processes; yields the scheduler's URL."""
    process = subprocess.Popen(
        [shoal_bin, "local", "--workers", "2", "--nthreads", "1", "--memory-limit", "1GiB"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http"), f"shoal local printed {url!r}"
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(params=["embedded", "cluster"])
def session(request: pytest.FixtureRequest) -> Iterator[shoal.Session]:
    """A session of two workers, embedded or on the cluster of worker processes."""
    if request.param == "embedded":
        s = shoal.Session(workers=2, partitions=3)
    else:
        s = shoal.Session(request.getfixturevalue("cluster"), partitions=3)
    with s:
        yield s
