"""The WSGI worker (PEP 3333). Being written."""

from __future__ import annotations

from typing import Any


def run(app: Any, worker: Any, status: Any, window: int, max_requests: int, threads: int) -> int:
    raise NotImplementedError("the WSGI worker is not written yet")
