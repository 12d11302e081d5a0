"""The dashboard's pages in a real browser: Debian's Chromium, driven by Playwright, against
`shoal local --workers 2` running TPC-H queries, served directly and behind nginx under a
path prefix. Screenshots go to target/dashboard-screenshots/.

Under CI=true a missing Chromium or nginx fails these tests with a line saying so; on a
developer's machine without them they are skipped."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "target" / "dashboard-screenshots"
CHROMIUM = Path("/usr/bin/chromium")
ON_CI = os.environ.get("CI") == "true"


def need(what: str, present: bool, install: str) -> None:
    """Fails under CI, skips elsewhere, when a program these tests drive is missing."""
    if present:
        return
    message = f"{what} is not installed ({install}); the dashboard's browser tests need it"
    if ON_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def nginx_path() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    need("chromium", CHROMIUM.exists(), "apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("playwright (Python)", False, "pip install playwright")
        raise
    with sync_playwright() as p:
        # Debian's Chromium, never a downloaded one; no sandbox inside a container.
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield chromium
        chromium.close()


@dataclass
class Local:
    """A `shoal local` cluster with its dashboard."""

    process: subprocess.Popen[str]
    scheduler: str
    dashboard: str
    log: Path


def start_local(shoal_bin: Path, scratch: Path, *extra: str) -> Local:
    log = scratch / "local.err"
    with open(log, "w") as err:
        process = subprocess.Popen(
            [shoal_bin, "local", "--workers", "2", "--nthreads", "1", "--memory-limit", "1GiB",
             "--dashboard-bind", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
    assert process.stdout is not None
    scheduler = process.stdout.readline().strip()
    assert scheduler.startswith("http"), f"shoal local printed {scheduler!r}"
    deadline = time.monotonic() + 30
    while True:
        found = re.search(r"dashboard at (http://\S+)", log.read_text())
        if found:
            return Local(process, scheduler, found.group(1), log)
        assert time.monotonic() < deadline, f"no dashboard link: {log.read_text()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def local(shoal_bin: Path) -> Iterator[Local]:
    scratch = Path(tempfile.mkdtemp())
    cluster = start_local(shoal_bin, scratch)
    yield cluster
    cluster.process.terminate()
    cluster.process.wait(timeout=30)
    shutil.rmtree(scratch, ignore_errors=True)


def run_query(shoal_bin: Path, scheduler: str, tpch_dir: Path, name: str) -> str:
    """Runs TPC-H query `name` on the cluster through the CLI; returns its CSV output."""
    query = ROOT.parent / "shared" / "tpch" / "queries" / f"{name}.sql"
    out = subprocess.run(
        [shoal_bin, "sql", "--cluster", scheduler, "--tables", str(tpch_dir), "--format", "csv",
         "-f", str(query)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return out.stdout


@dataclass
class Watched:
    """A page with every console error, page error and failed request it had."""

    page: object
    problems: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def watched(browser: object) -> Iterator[Watched]:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    seen = Watched(page)
    page.on("console", lambda m: seen.problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.problems.append(f"page error: {e}"))
    # Leaving a page cancels its open requests (the event stream always is one): the
    # browser reports those as aborted, which is not a failure of the dashboard.
    page.on("requestfailed", lambda r: seen.problems.append(f"failed: {r.url} {r.failure}")
            if r.failure != "net::ERR_ABORTED" else None)
    yield seen
    page.close()


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def follows_a_query(watched: Watched, url: str, query) -> int:
    """Opens the status page at `url`, runs `query()` while it is open and checks that the
    page shows two workers, draws the query's tasks and reaches 100% without a reload;
    returns the job id the progress shows."""
    page = watched.page
    page.goto(url)
    page.wait_for_selector("#worker-count b")
    wait_for("two workers", lambda: page.inner_text("#worker-count b") == "2")
    assert page.locator("#worker-memory .row.worker").count() == 2
    # A mark that a reload would wipe out.
    page.evaluate("window.stillTheSamePage = true")
    before = page.locator("#task-stream rect.task").count()
    query()
    wait_for("the task stream to draw the query's tasks",
             lambda: page.locator("#task-stream rect.task").count() > before)
    wait_for("the job's progress to reach 100%", lambda: any(
        "100%" in t for t in page.locator(".job-progress").all_inner_texts()))
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    job = page.locator(".job-progress").first.get_attribute("data-job")
    watched.check()
    return int(job)


def test_the_status_page_follows_a_tpch_query(watched, local, shoal_bin, tpch_dir) -> None:
    answer: list[str] = []
    job = follows_a_query(watched, local.dashboard,
                          lambda: answer.append(run_query(shoal_bin, local.scheduler, tpch_dir, "q05")))
    assert answer[0].count("\n") == 6, answer[0]  # a header and q05's five nations
    watched.shot("status")
    # The job's page: its stage graph and plan with metrics from every stage.
    page = watched.page
    page.goto(f"{local.dashboard}jobs/{job}")
    page.wait_for_selector("#dag g.stage")
    wait_for("the job page", lambda: page.inner_text("#job-state") == "done")
    stages = page.locator("#dag g.stage").count()
    assert stages >= 3
    assert page.locator("#job-plan pre.plan").count() == stages
    plan = page.inner_text("#job-plan")
    assert "HashJoinExec" in plan and "output_rows=" in plan
    assert "SELECT n_name" in page.inner_text("#job-label")
    watched.check()
    watched.shot("job")


def test_the_cluster_map_draws_transfers_and_launches(watched, local, shoal_bin, tpch_dir) -> None:
    page = watched.page
    page.goto(local.dashboard + "cluster-map")
    wait_for("two worker nodes", lambda: page.locator("circle.worker-node").count() == 2)
    run_query(shoal_bin, local.scheduler, tpch_dir, "q09")
    transfers = lambda: int(page.get_attribute("#cluster-map", "data-transfers"))  # noqa: E731
    wait_for("a drawn transfer", lambda: transfers() > 0)
    assert int(page.get_attribute("#cluster-map", "data-launches")) > 0
    watched.check()
    watched.shot("cluster-map")


def test_the_workers_jobs_and_info_pages(watched, local, shoal_bin, tpch_dir) -> None:
    run_query(shoal_bin, local.scheduler, tpch_dir, "q01")
    page = watched.page
    page.goto(local.dashboard + "workers")
    wait_for("two workers", lambda: page.locator("#workers tr.worker").count() == 2)
    assert "127.0.0.1:" in page.inner_text("#workers")
    page.click("#workers tr.worker a >> nth=0")
    page.wait_for_selector("#worker-tasks tr")
    assert "Worker 0" in page.inner_text("#page h2 >> nth=0")
    page.goto(local.dashboard + "jobs")
    wait_for("the jobs table", lambda: page.locator("#jobs tr.job").count() >= 1)
    assert "l_returnflag" in page.inner_text("#jobs")
    page.goto(local.dashboard + "info")
    page.wait_for_selector("#version")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", page.inner_text("#version"))
    assert "shoal.dashboard.bind" in page.inner_text("#settings")
    watched.check()
    watched.shot("info")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_pages_work_behind_nginx_under_a_prefix(watched, shoal_bin, tpch_dir) -> None:
    nginx = nginx_path()
    need("nginx", nginx is not None, "apt-get install nginx")
    scratch = Path(tempfile.mkdtemp())
    cluster = start_local(shoal_bin, scratch, "--dashboard-prefix", "/team/shoal")
    upstream = cluster.dashboard.split("/team/shoal")[0]
    port = free_port()
    conf = scratch / "nginx.conf"
    conf.write_text(f"""
daemon off;
pid {scratch}/nginx.pid;
error_log {scratch}/error.log;
events {{}}
http {{
  access_log {scratch}/access.log;
  client_body_temp_path {scratch}/body;
  proxy_temp_path {scratch}/proxy;
  fastcgi_temp_path {scratch}/fastcgi;
  uwsgi_temp_path {scratch}/uwsgi;
  scgi_temp_path {scratch}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location /team/shoal/ {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_buffering off;
    }}
    # The same dashboard under another outside path: links and redirects are relative.
    location /elsewhere/ {{
      proxy_pass {upstream}/team/shoal/;
      proxy_http_version 1.1;
      proxy_buffering off;
    }}
  }}
}}
""")
    proxy = subprocess.Popen([nginx, "-c", str(conf), "-p", str(scratch)],
                             stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            assert proxy.poll() is None, f"nginx exited: {proxy.stderr.read()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for("nginx", up, timeout=20)
        url = f"http://127.0.0.1:{port}/team/shoal/"
        follows_a_query(watched, url,
                        lambda: run_query(shoal_bin, cluster.scheduler, tpch_dir, "q03"))
        assert watched.page.url == url + "status"
        # Every request went through the proxy, under the prefix.
        requests = (scratch / "access.log").read_text()
        assert "/team/shoal/assets/common.js" in requests
        assert "/team/shoal/api/v1/events" in requests or "/team/shoal/api/v1/tasks" in requests
        watched.shot("behind-nginx")
        page = watched.page
        page.goto(f"http://127.0.0.1:{port}/elsewhere/")
        assert page.url == f"http://127.0.0.1:{port}/elsewhere/status"
        wait_for("two workers", lambda: page.inner_text("#worker-count b") == "2")
        page.click("header >> text=Jobs")
        wait_for("the jobs table", lambda: page.locator("#jobs tr.job").count() >= 1)
        assert page.url == f"http://127.0.0.1:{port}/elsewhere/jobs"
        watched.check()
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)
        cluster.process.terminate()
        cluster.process.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
