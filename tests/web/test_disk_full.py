"""`catdog serve` on a state folder whose disk fills up: serving goes on, writes say 507, /api/status says so."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

from PIL import Image, ImageOps

from ..conftest import CATSDOGS
from .test_server import Server, call, multipart
from .tinydisk import fill, tiny_disk

TOKEN = "disk-test-token"


def upload(server: Server, data: bytes, name: str) -> tuple[int, dict[str, object]]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {TOKEN}"}
    status, answer = call(server.base + "/api/upload-training-data?class_name=cats", body, headers)
    return status, json.loads(answer)


def new_photo(seed: int) -> bytes:
    """A cat photo in neither split (mirrored and tinted: new content)."""
    source = sorted((CATSDOGS / "train" / "cats").iterdir())[seed]
    image = ImageOps.mirror(Image.open(source).convert("RGB"))
    image.putpixel((0, 0), (seed, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def disk(server: Server) -> dict[str, object]:
    status, answer = call(server.base + "/api/status")
    assert status == 200
    return dict(json.loads(answer)["disk"])


def test_a_full_disk_costs_writes_never_serving(lite0_model: Path, tmp_path: Path) -> None:
    photo = next((CATSDOGS / "test" / "dogs").iterdir()).read_bytes()
    with tiny_disk(tmp_path / "state", "16m") as state:
        # Prometheus' files are in the state folder (state/prometheus), as by default
        server = Server(lite0_model, state, workers=1, env={"CATDOG_ADMIN_TOKEN": TOKEN, "CATDOG_WORKER": "false"})
        try:
            server.wait_ready()
            assert call(server.base + "/api/predict", *multipart(photo, "a.jpg"))[0] == 200
            assert disk(server)["full"] is False
            filler = fill(state)

            for i in range(5):  # new content each time: inferred, recorded (the record waits in memory)
                status, _ = call(server.base + "/api/predict", *multipart(photo + bytes([i]) * 8, f"{i}.jpg"))
                assert status == 200
            for page in ("/api/uploads", "/api/monitoring", "/api/dataset-stats", "/monitoring", "/metrics"):
                assert call(server.base + page)[0] == 200, page  # new metric series on a full disk: no SIGBUS
            status, answer = upload(server, new_photo(1), "new-cat.jpg")
            assert status == 507 and "the disk is full" in str(answer["detail"]), answer
            assert not [p for p in (state / "uploads").rglob("*") if p.is_file()]  # nothing partial kept
            full = disk(server)
            assert full["full"] is True and full["free_bytes"] == 0 and full["last_write_error"]
            assert server.process.poll() is None, "the server died"

            filler.unlink()  # space is back: writes work again
            status, answer = upload(server, new_photo(1), "new-cat.jpg")
            assert status == 200 and answer["uploaded"] == 1, answer
            assert disk(server)["full"] is False
            uploads = json.loads(call(server.base + "/api/uploads")[1])
            assert uploads["total"] == 1
        finally:
            output = server.stop()
        assert server.process.returncode == 0, output[-3000:]
