"""catdog.lifecycle: children end with their parent however it ends; one holder of a lock at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

# A parent that starts one child and prints the child's pid, then sleeps until killed. The child
# follows the parent with exit_with_parent and sleeps for ever (or ignores SIGTERM: `stubborn`).
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)
    print(child.pid, child.stdout.readline().strip(), flush=True)
    time.sleep(600)
    """
)
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from catdog.lifecycle import exit_with_parent
    if sys.argv[1] == "stubborn":
        signal.signal(signal.SIGTERM, lambda *_: print("ignored SIGTERM", file=sys.stderr))
    exit_with_parent(os.getppid(), grace_s=1.0, poll_s=0.1, what="test child")
    print("following", flush=True)
    time.sleep(600)
    """
)


def start_family(mode: str) -> tuple[subprocess.Popen[str], psutil.Process]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, mode], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid, said = parent.stdout.readline().split()
    assert said == "following"
    return parent, psutil.Process(int(pid))


def gone(process: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["polite", "stubborn"])
def test_a_child_ends_when_its_parent_is_killed(mode: str) -> None:
    parent, child = start_family(mode)
    try:
        assert not gone(child, 0.5)  # it lives as long as its parent does
        parent.kill()  # SIGKILL: the parent runs no code at all
        parent.wait(10)
        # polite: it stops on its own SIGTERM; stubborn: os._exit one grace second later
        assert gone(child, 5.0), f"the child (pid {child.pid}) outlived its parent"
    finally:
        for process in (parent,):
            if process.poll() is None:
                process.kill()
        if child.is_running():
            child.kill()


def test_follow_server_does_nothing_in_the_server_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from catdog.lifecycle import SERVER_PID_ENV, follow_server

    monkeypatch.setenv(SERVER_PID_ENV, str(os.getpid()))
    assert follow_server("test") is None
    monkeypatch.delenv(SERVER_PID_ENV)
    assert follow_server("test") is None


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from catdog.lifecycle import hold_exclusive_lock
    handle = hold_exclusive_lock(Path(sys.argv[1]), on_wait=lambda who: print("waiting for", who, flush=True))
    print("holding", flush=True)
    time.sleep(600)
    """
)


def test_the_lock_passes_on_only_when_its_holder_dies(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "serve-worker.lock"
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    second = None
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "holding"
        second = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
        assert second.stdout is not None
        assert second.stdout.readline().strip() == f"waiting for pid {first.pid}"
        time.sleep(1.0)
        assert second.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        started = time.monotonic()
        assert second.stdout.readline().strip() == "holding"
        assert time.monotonic() - started < 5
        assert lock.read_text().strip() == str(second.pid)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
