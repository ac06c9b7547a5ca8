"""Child processes that end with their parent, and one queue consumer per server.

`catdog serve` starts children: its job worker (`catdog worker --with-parent PID`), uvicorn's
worker processes (with `--workers N`), the drift check's process. They must end when the
server ends, whatever ended it: SIGTERM and SIGINT get an orderly stop (catdog.web.server), but
SIGKILL, the OOM killer or a crash run no code in the dying process, and an orphaned job
worker once finished a retrain and promoted a version with no server running.

How a child notices: a daemon thread compares `os.getppid()` with the parent's pid every half
second. When the parent dies the kernel re-parents the child at once (to init or a subreaper),
so the comparison fails within one poll, whatever signal killed the parent. This is PyTorch's
DataLoader worker watchdog (torch.utils.data._utils.worker.ManagerWatchdog). Linux's
prctl(PR_SET_PDEATHSIG) was set aside: it fires when the *thread* that started the child ends,
not the process (man 2 prctl), and our children are started from threads that may end first
(the drift process from a request's pool thread, which anyio retires after 10 s idle; the job
worker from its supervisor thread), it is Linux only, and it cannot ask for an orderly stop.

What the child then does: SIGTERM to itself, so its own orderly stop runs (uvicorn finishes
requests and writes records; Huey's consumer stops), and `os._exit(1)` if it is still alive
`grace_s` later.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a child looks at its parent
GRACE_S = 10.0  # from the orderly stop's SIGTERM to a hard exit
SERVER_PID_ENV = "CATDOG_SERVER_PID"  # set by `catdog serve` for the processes uvicorn starts (not a setting)


def exit_with_parent(
    parent_pid: int, *, grace_s: float = GRACE_S, poll_s: float = POLL_S, what: str = "this process"
) -> threading.Thread:
    """End this process when `parent_pid` is no longer its parent (the parent died, even by SIGKILL).

    Starts a daemon thread and returns it. The first check is immediate: a child whose parent
    died before this call stops at once. `grace_s`: seconds between the SIGTERM this process
    sends itself and os._exit(1); `what`: the name in the log line.
    """
    thread = threading.Thread(
        target=_watch_parent, args=(parent_pid, grace_s, poll_s, what), name="parent-watch", daemon=True
    )
    thread.start()
    return thread


def follow_server(what: str) -> threading.Thread | None:
    """In a process uvicorn started for `catdog serve --workers N`: end with the server (SERVER_PID_ENV).

    Nothing happens in the server's own process (one worker runs in it) or without the variable.
    """
    value = os.environ.get(SERVER_PID_ENV, "")
    if not value.isdigit() or int(value) == os.getpid():
        return None
    return exit_with_parent(int(value), what=what)


def _watch_parent(parent_pid: int, grace_s: float, poll_s: float, what: str) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    log.warning("%s (pid %d): its parent (pid %d) is gone; stopping", what, os.getpid(), parent_pid)
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    log.error("%s (pid %d) did not stop within %.0f s of its parent's end; exiting now", what, os.getpid(), grace_s)
    os._exit(1)


def hold_exclusive_lock(path: Path, *, on_wait: Callable[[str], None] | None = None) -> IO[str]:
    """Wait until this process holds the exclusive lock on `path`, and keep it until the process ends.

    An advisory fcntl lock: the kernel releases it when the holder dies, however it dies, so a
    waiter never waits for a process that is gone. The holder's pid is written into the file for
    the waiting message; `on_wait(text)` is called once when the lock is taken by another process.
    Returns the open file: keep a reference to it (closing it releases the lock).
    Raises OSError when the file cannot be opened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the life of the process
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not told and on_wait is not None:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                on_wait(f"pid {holder}" if holder.isdigit() else holder)
                told = True
            time.sleep(POLL_S)
    with contextlib.suppress(OSError):  # a full disk must not stop the worker: the pid is only for messages
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle
