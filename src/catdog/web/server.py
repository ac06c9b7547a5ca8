"""`catdog serve`: check the model, prepare shared state for the workers, run uvicorn.

Flags become CATDOG_* variables before uvicorn starts, so every worker process (a fresh
interpreter) reads the same settings. Metrics of all workers meet in PROMETHEUS_MULTIPROC_DIR,
emptied at each start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from catdog.lifecycle import SERVER_PID_ENV
from catdog.ml.artifacts import MODEL_ONNX, ModelConfig, ModelDirError
from catdog.settings import Settings, SettingsError, get_settings
from catdog.web import MULTIPROC_ENV  # never catdog.web.metrics here: it must see the variable set
from catdog.web.auth import resolve_admin_token


def serve(
    model: str | None = None, host: str | None = None, port: int | None = None, workers: int | None = None
) -> int:
    """Run the platform until interrupted. Raises ModelDirError (exit 2) for a missing or unbuilt model."""
    overrides: dict[str, object] = {"CATDOG_HOST": host, "CATDOG_PORT": port, "CATDOG_WORKERS": workers}
    if model is not None:
        overrides["CATDOG_PINNED_MODEL"] = Path(model).resolve()
    os.environ.update({name: str(value) for name, value in overrides.items() if value is not None})
    settings = get_settings()
    # Everything that would otherwise fail inside uvicorn, after a long model load: one line now.
    _usable_state_dir(settings.state_dir)
    token, created = resolve_admin_token(settings)
    from catdog.db.session import check_database  # here: the CLI's other commands need no SQLAlchemy

    check_database(settings.sqlalchemy_url)
    model_dir = settings.pinned_model or _production_dir(settings)
    if settings.pinned_model is None:
        from catdog.jobs.reconcile import reconcile

        reconcile(settings)  # a version a killed job left half-registered: its tags and job row agree again
    ModelConfig.load(model_dir)
    if not (model_dir / MODEL_ONNX).is_file():
        raise ModelDirError(f"{model_dir / MODEL_ONNX} is missing: build it with `catdog build {model_dir}`")
    os.environ[MULTIPROC_ENV] = str(_fresh_metrics_dir(settings.prometheus_dir))
    os.environ[SERVER_PID_ENV] = str(os.getpid())  # uvicorn's worker processes end with this one (lifecycle)
    _check_address(settings.host, settings.port)
    _announce_token(settings, token, created)
    worker = WorkerProcess() if settings.worker else None

    url = f"http://{'localhost' if settings.host in ('127.0.0.1', '0.0.0.0') else settings.host}:{settings.port}"
    print(
        f"catdog: serving {model_dir} on {url} with {settings.workers} worker(s); "
        f"/ready answers 200 once the model is warm; pages: {url}/  API: {url}/docs",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn shuts down on SIGTERM, then raises the signal again; this handler turns it into an
    # exit that runs the `finally` below, so `kill -TERM` (docker stop) stops the job worker too.
    # SIGHUP (a closed terminal) stops the server as SIGTERM does. SIGKILL runs no code here: the
    # children notice that their parent is gone and stop themselves (catdog.lifecycle).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGHUP, _terminate_on_sighup)
    if worker is not None:
        worker.start()
    try:
        _run_uvicorn(settings)
    finally:
        if worker is not None:
            worker.stop()
    return 0


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _terminate_on_sighup(signum: int, _frame: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # whoever handles SIGTERM now (uvicorn, or the handler above) stops us


def _run_uvicorn(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        "catdog.web.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        proxy_headers=False,  # create_app applies X-Forwarded-For from CATDOG_TRUSTED_PROXIES only
        timeout_graceful_shutdown=30,
    )


def _production_dir(settings: Settings) -> Path:
    """The registry's production model directory; registers the shipped models on a fresh registry."""
    from catdog.registry import Registry
    from catdog.web.model_source import production_model_dir

    registry = Registry(settings)
    for info in registry.bootstrap():
        print(f"catdog: registered {info.model_version} as model version {info.version}", file=sys.stderr)
    production = production_model_dir(registry)
    if production is None:
        raise SettingsError("the model registry has no production version: promote one with `catdog models promote N`")
    return production


def _announce_token(settings: Settings, token: str, created: bool) -> None:
    if settings.admin_token:
        print("catdog: admin token from CATDOG_ADMIN_TOKEN", file=sys.stderr)
    elif created:
        print(
            f"catdog: admin token (new; kept in {settings.admin_token_file}, mode 600): {token}",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"catdog: admin token in {settings.admin_token_file}", file=sys.stderr)


class WorkerProcess:
    """`catdog worker` as a child process, restarted if it dies (its start fails the job it was running).

    It runs with `--with-parent` (it ends with this process even on SIGKILL, and a worker left by
    an earlier server on this state folder is waited for: never two consumers), in a process
    group of its own (Ctrl-C reaches the server, which stops it in order).
    """

    RESTART_DELAY_S = 2.0

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "catdog.cli", "worker", "--with-parent", str(os.getpid())]
        self.process = subprocess.Popen(command, process_group=0)
        print(f"catdog: job worker started (pid {self.process.pid})", file=sys.stderr, flush=True)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            process = self.process
            if process is not None and process.poll() is not None and not self._stopping.is_set():
                print(f"catdog: job worker exited ({process.returncode}); restarting", file=sys.stderr, flush=True)
                if self._stopping.wait(self.RESTART_DELAY_S):
                    return
                self._spawn()
            self._stopping.wait(1.0)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Huey stops at once; a job in flight is failed by the next worker's start), then SIGKILL."""
        self._stopping.set()
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _usable_state_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(f"CATDOG_STATE_DIR={path} is not a folder catdog can write to: {exc.strerror}") from None
    return path


def _check_address(host: str, port: int) -> None:
    """Bind once as uvicorn will, so a taken port or a bad host is one line before the model loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise SettingsError(f"cannot listen on {host}:{port} (CATDOG_HOST, CATDOG_PORT): {why}") from None


def _fresh_metrics_dir(path: Path) -> Path:
    """Empty the Prometheus folder of this server's processes (samples of a previous run would add up)."""
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise SettingsError(f"CATDOG_METRICS_DIR={path} is not a folder catdog can write to: {exc.strerror}") from None
    return path
