"""A worker process: started by the server with the segment's path and its
id, it imports the application, runs it, and says when it is ready.

It reports to the supervisor through the status pipe (descriptor 3): ``ready``
once it serves (for ASGI, after lifespan startup), ``error TEXT`` before it
exits because it cannot run, ``recycle TEXT`` when ``--max-requests`` is
reached. An application that cannot be loaded exits with code 3, which stops
the server at once (no retry would load it).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import traceback
from typing import NoReturn

from . import _loader, _native


class Status:
    """The worker's end of the status pipe."""

    def __init__(self) -> None:
        fd = os.environ.get("RINGWAY_STATUS_FD")
        self.fd = int(fd) if fd else None

    def send(self, word: str, text: str = "") -> None:
        if self.fd is None:
            return
        line = f"{word} {text}".strip().replace("\n", " ") + "\n"
        try:
            os.write(self.fd, line.encode())
        except OSError:
            pass

    def ready(self) -> None:
        self.send("ready")

    def recycle(self, why: str) -> None:
        self.send("recycle", why)


def fail(status: Status, why: str, code: int) -> NoReturn:
    """Reports `why` to the supervisor and on stderr, and exits."""
    print(f"ringway worker {os.getpid()}: {why}", file=sys.stderr, flush=True)
    status.send("error", why)
    os._exit(code)


def reopen_error_log(signum: int, frame: object) -> None:
    """SIGUSR1 (passed on by the server after a log rotation): the error log
    is reopened on descriptor 2, as the server reopened its own."""
    path = os.environ.get("RINGWAY_ERROR_LOG")
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return
    os.dup2(fd, 2)
    os.close(fd)


def setup_process(level: str) -> None:
    """What every worker needs before the app runs: logging at the
    configured level on stderr (gunicorn's format), print() flushed line by
    line (as on a terminal, not when a block buffer fills), and the signals
    the server sends handled."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
    )
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    # The server decides when to stop: a terminal's Ctrl-C reaches the whole
    # process group, and must not kill workers that are finishing requests.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, reopen_error_log)


def main() -> None:
    status = Status()
    env = os.environ
    ours = int(env.get("RINGWAY_WIRE_VERSION", _native.WIRE_VERSION))
    if ours != _native.WIRE_VERSION:
        fail(
            status,
            f"this ringway package speaks wire protocol {_native.WIRE_VERSION}, the server "
            f"{ours}: install the same ringway version for the server and its workers",
            _native.EXIT_APP_LOAD,
        )
    setup_process(env.get("RINGWAY_LOG_LEVEL", "info"))
    try:
        app = _loader.load(env["RINGWAY_APP"])
    except _loader.AppLoadError as e:
        traceback.print_exc()
        fail(status, str(e), _native.EXIT_APP_LOAD)
    kind = env.get("RINGWAY_INTERFACE", "auto")
    if kind == "auto":
        kind = _loader.interface(app)
    worker = _native.Worker(env["RINGWAY_SEGMENT"], int(env["RINGWAY_WORKER"]))
    max_requests = int(env.get("RINGWAY_MAX_REQUESTS", "0"))
    window = int(env.get("RINGWAY_RESPONSE_WINDOW", str(256 * 1024)))
    if kind in ("asgi", "asgi2"):
        from . import asgi

        if kind == "asgi2":
            app = asgi.asgi2(app)
        code = asgi.run(
            app,
            worker,
            status,
            window=window,
            max_requests=max_requests,
            loop=env.get("RINGWAY_LOOP", "auto"),
        )
    elif kind == "wsgi":
        from . import wsgi

        code = wsgi.run(
            app,
            worker,
            status,
            window=window,
            max_requests=max_requests,
            threads=int(env.get("RINGWAY_THREADS", "1")),
        )
    else:
        fail(
            status, f"unknown --interface {kind!r} (auto, asgi, asgi2, wsgi)", _native.EXIT_APP_LOAD
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
