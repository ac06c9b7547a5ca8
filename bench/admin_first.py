"""How soon an admin route without a token answers 401 while a big upload streams in.

The app (no model, no life cycle) runs under uvicorn on 127.0.0.1; a client streams a multipart
body of --megabytes to POST /api/upload-training-data with no token, from a thread, and the main
thread waits for the first byte of the answer. Twice per run: with catdog's AdminFirst middleware
(the token is checked before any body is read) and with it taken out (FastAPI reads and parses the
whole body before the admin dependency runs: the order before issue 20). Prints the status, the
time to the answer (ms) and how much of the body the client had sent by then (MiB). Localhost moves
a body at GB/s; over a real link the "body first" time grows with the body (140 MB at 100 Mbit/s:
about 11 s), the "token first" time does not.

    .venv/bin/python bench/admin_first.py                  # 140 MB, 3 tries each
    .venv/bin/python bench/admin_first.py --megabytes 500 --tries 1
"""

from __future__ import annotations

import argparse
import platform
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from catdog.settings import Settings
from catdog.web.app import create_app
from catdog.web.middleware import AdminFirst


def serve(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, port


def upload_without_token(port: int, size: int) -> tuple[str, float, float]:
    """(status line, seconds to the first byte of the answer, MiB of the body sent by then)."""
    boundary = uuid.uuid4().hex
    head = (
        f"POST /api/upload-training-data?class_name=cats HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'.encode()
    sent = 0
    sock = socket.create_connection(("127.0.0.1", port), timeout=300)

    def push() -> None:
        nonlocal sent
        chunk, left = b"\0" * (1 << 20), size - len(part)
        try:
            sock.sendall(head + part)
            while left > 0:
                piece = chunk[: min(left, len(chunk))]
                sock.sendall(piece)
                sent, left = sent + len(piece), left - len(piece)
        except OSError:  # the server closed the connection: nothing more to send
            pass

    started = time.perf_counter()
    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    answer = sock.recv(256)
    took, sent_then = time.perf_counter() - started, sent / 2**20
    pusher.join(timeout=120)
    sock.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), took, sent_then


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=140, help="the body's size in MB (10^6 bytes)")
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    size = args.megabytes * 10**6
    print(f"CPU: {platform.processor() or platform.machine()}; body {args.megabytes} MB, no token")
    with tempfile.TemporaryDirectory() as tmp:
        for label, token_first in (("token first (AdminFirst)", True), ("body first (AdminFirst removed)", False)):
            settings = Settings(state_dir=Path(tmp) / str(token_first), admin_token="bench-token")
            app = create_app(settings, Path(tmp) / "no-model", configure_logs=False)
            if not token_first:
                app.user_middleware = [m for m in app.user_middleware if m.cls is not AdminFirst]
            server, thread, port = serve(app)
            try:
                for _ in range(args.tries):
                    status, took, sent = upload_without_token(port, size)
                    print(f"{label:32} {status:28} after {took * 1000:7.0f} ms, {sent:6.0f} MiB of the body sent")
            finally:
                server.should_exit = True
                thread.join(timeout=10)


if __name__ == "__main__":
    main()
