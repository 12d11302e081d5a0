"""What Python users expect besides answers: exception classes, Ctrl-C, the GIL released
during jobs, a forked child refused clearly, the stub matching the native module."""

from __future__ import annotations

import ast
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import shoal
from shoal import _native

LONG_QUERY = (
    "select count(distinct a.value + b.value) from generate_series(1, 30000) a, "
    "generate_series(1, 30000) b"
)


def test_errors_map_to_their_kind_with_one_line(session: shoal.Session) -> None:
    with pytest.raises(shoal.InputError) as bad:
        session.sql("select no_such_column from (select 1 as a)").to_arrow()
    assert isinstance(bad.value, ValueError)
    assert "no_such_column" in str(bad.value) and "\n" not in str(bad.value)
    with pytest.raises(shoal.PlanningError):
        session.sql("select * from unnest([1, 2]) with ordinality").to_arrow()
    with pytest.raises(shoal.ShoalIOError) as unreachable:
        shoal.Session("http://127.0.0.1:1")
    assert isinstance(unreachable.value, OSError)
    assert "127.0.0.1:1" in str(unreachable.value)


def test_ctrl_c_cancels_the_job_and_raises_keyboard_interrupt(session: shoal.Session) -> None:
    # A process started in the background by a non-interactive shell inherits SIGINT
    # ignored, and Python then installs no handler for it: have Python's own, as in a
    # terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            session.sql(LONG_QUERY).to_arrow()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 1.0 + 1.0, "raised within a second of the signal"
    # The job is gone from every worker soon after.
    deadline = time.monotonic() + 10
    while session.status()["jobs"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session.status()["jobs"] == []
    assert all(w["tasks_running"] == 0 for w in session.status()["workers"])


def test_other_threads_run_while_a_job_does(session: shoal.Session) -> None:
    ticks = 0
    stop = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        started = time.monotonic()
        session.sql(
            "select count(distinct a.value * b.value) from generate_series(1, 3000) a, "
            "generate_series(1, 3000) b"
        ).to_arrow()
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        ticker.join()
    # A thread blocked on the GIL for the whole job would tick a handful of times.
    assert ticks > elapsed * 100, f"{ticks} ticks in {elapsed:.2f} s"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_is_told_to_make_its_own_session() -> None:
    s = shoal.Session(workers=1)
    frame = s.sql("select 1 as x")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        messages = []
        for use in (lambda: s.sql("select 1"), lambda: frame.to_arrow()):
            try:
                use()
                messages.append("no error")
            except shoal.ShoalError as e:
                messages.append(str(e))
        # A session of its own works in the child.
        with shoal.Session(workers=1) as own:
            messages.append(str(own.sql("select 2 as y").to_arrow().to_pylist()))
        os.write(write, "\n".join(messages).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    messages = os.read(read, 4096).decode().split("\n")
    assert status == 0
    assert len(messages) == 3, messages
    assert all("forked child" in m for m in messages[:2]), messages
    assert messages[2] == "[{'y': 2}]", messages
    assert s.sql("select 1 as x").to_arrow().to_pylist() == [{"x": 1}]
    s.close()


def test_the_stub_lists_what_the_native_module_has() -> None:
    stub = Path(shoal.__file__).with_name("_native.pyi")
    tree = ast.parse(stub.read_text())
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        native = getattr(_native, cls.name)
        declared = {
            f.name
            for f in cls.body
            if isinstance(f, ast.FunctionDef) and f.name != "__init__"
        }
        public = {n for n in dir(native) if not n.startswith("_")}
        assert declared == public, f"{cls.name}: stub {declared ^ public} differ"


def test_reprs_say_what_they_are_without_computing() -> None:
    with shoal.Session(workers=2) as s:
        assert repr(s) == "shoal.Session(embedded, 2 workers)"
        frame = s.sql(LONG_QUERY)
        started = time.monotonic()
        html = frame._repr_html_()
        assert "count(DISTINCT" in html or "count(distinct" in html.lower()
        assert time.monotonic() - started < 1.0
        assert s.status()["jobs"] == []
        shoal.options.preview_rows = 3
        try:
            preview = s.sql("select 7 * value as v from generate_series(1, 10)")._repr_html_()
        finally:
            shoal.options.preview_rows = 0
        assert "first 3 rows" in preview and "<td>14</td>" in preview
        assert "<td>28</td>" not in preview
    assert repr(s) == "shoal.Session(closed)"


def test_progress_reports_task_counts_to_a_callable(cluster: str) -> None:
    seen: list[tuple[int, int]] = []
    with shoal.Session(cluster, partitions=4, progress=lambda d, t: seen.append((d, t))) as s:
        s.sql(
            "select a.value % 7 as k, count(*) from generate_series(1, 200000) a "
            "group by 1 order by 1"
        ).to_arrow()
    assert seen, "the callable was called"
    done, total = seen[-1]
    assert total > 1 and done == total, seen
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]) if a[1] == b[1]), seen


def test_no_progress_bar_when_nobody_watches(capfd: pytest.CaptureFixture[str]) -> None:
    # Under pytest stderr is not a terminal: the default shows nothing.
    with shoal.Session(workers=2) as s:
        s.sql(LONG_QUERY.replace("30000", "2000")).to_arrow()
    assert capfd.readouterr().err == ""


def test_the_bar_draws_task_counts(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal import _progress

    monkeypatch.setattr(_progress, "DELAY", 0)
    assert isinstance(_progress.reporter(True), _progress.Bar)
    assert _progress.reporter(False) is None
    bar = _progress.Bar()
    for done in (0, 4, 10):
        bar(done, 10)
    bar(1, 3)  # a new job: a new bar
    bar.close()
    err = capfd.readouterr().err
    assert "4/10" in err and "1/3" in err, err


def test_interrupting_a_jupyter_kernel_cancels_the_job(cluster: str) -> None:
    """A notebook user presses "interrupt": the kernel (ipykernel, driven the way nbclient
    drives it, through jupyter_client) gets SIGINT mid-cell; the cell raises
    KeyboardInterrupt within a second and the cluster's workers go idle."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        setup = client.execute_interactive(
            f"import shoal\ns = shoal.Session({cluster!r}, progress=False)", timeout=60
        )
        assert setup["content"]["status"] == "ok"
        cell = (
            "try:\n"
            f"    s.sql({LONG_QUERY!r}).to_arrow()\n"
            "    print('finished')\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted')\n"
        )
        request = client.execute(cell)
        _wait_for_running_job(shoal.Session(cluster, progress=False))
        sent = time.monotonic()
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=30)
        waited = time.monotonic() - sent
        assert reply["parent_header"]["msg_id"] == request
        assert reply["content"]["status"] == "ok"
        printed = _stream_text(client, request)
        assert printed.strip() == "interrupted"
        assert waited < 2.0, f"the cell ended {waited:.2f} s after the interrupt"
        with shoal.Session(cluster, progress=False) as observer:
            deadline = time.monotonic() + 10
            while observer.status()["jobs"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert observer.status()["jobs"] == []
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _wait_for_running_job(observer: shoal.Session) -> None:
    with observer:
        deadline = time.monotonic() + 30
        while not observer.status()["jobs"]:
            assert time.monotonic() < deadline, "the cell's job never started"
            time.sleep(0.05)


def _stream_text(client: object, request: str) -> str:
    """What the cell `request` printed, read from the kernel's output channel."""
    text = ""
    while True:
        message = client.get_iopub_msg(timeout=10)  # type: ignore[attr-defined]
        if message["parent_header"].get("msg_id") != request:
            continue
        if message["msg_type"] == "stream":
            text += message["content"]["text"]
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return text


def test_a_session_serves_its_dashboard_when_asked() -> None:
    import json
    import urllib.request

    with shoal.Session(workers=2, dashboard="127.0.0.1:0", progress=False) as s:
        link = s.dashboard_link
        assert link is not None and link.startswith("http://127.0.0.1:"), link
        s.sql("select count(*) from (values (1), (2)) t(x) group by x").to_arrow()
        with urllib.request.urlopen(link + "api/v1/status", timeout=10) as reply:
            status = json.load(reply)
        assert len(status["workers"]) == 2
        deadline = time.time() + 20
        while True:
            with urllib.request.urlopen(link + "metrics", timeout=10) as reply:
                metrics = reply.read().decode()
            if 'shoal_scheduler_jobs_total{state="completed"} 1' in metrics.splitlines():
                break
            assert time.time() < deadline, metrics
            time.sleep(0.05)
    assert shoal.Session(workers=1, progress=False).dashboard_link is None
