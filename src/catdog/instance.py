"""The name of this process among catdog's servers and workers: "hostname:pid".

In a container the hostname is the container's id, so the name tells replicas apart
(GET /api/status `instance`) and job rows say which worker ran them.
"""

from __future__ import annotations

import os
import socket


def instance_name() -> str:
    """This process as "hostname:pid"; the hostname part is what `socket.gethostname()` returns."""
    return f"{socket.gethostname()}:{os.getpid()}"
