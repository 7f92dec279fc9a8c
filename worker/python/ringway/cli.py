"""The ``ringway`` command: ``ringway APP [OPTIONS]``.

It runs the interface server in this process (the Rust supervisor and its
reactor threads, through ``ringway._native.serve``), which starts the worker
processes (``python -m ringway.worker``) that import and run APP.

Options are named as gunicorn and uvicorn name them, and each can also be
set with an environment variable: ``--max-requests`` is
``RINGWAY_MAX_REQUESTS``; a repeatable option takes a comma-separated list
(``RINGWAY_BIND=127.0.0.1:8000,unix:/run/app.sock``). A command-line option
wins over its variable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__, _loader, _native

# The server's options: (name, metavar, help, repeatable). They are passed
# to the Rust server as they are, which validates them.
SERVER_OPTIONS: list[tuple[str, str, str, bool]] = [
    ("bind", "ADDR", "HOST:PORT, unix:PATH or fd://N (default 127.0.0.1:8000)", True),
    ("backlog", "N", "listen backlog (default 2048)", False),
    ("reactors", "N", "reactor threads, one io_uring runtime each (default: one per core)", False),
    ("workers", "N", "worker processes (default 1)", False),
    ("worker-start-timeout", "SECS", "a new worker must be ready within this (default 60)", False),
    (
        "timeout",
        "SECS",
        "the app must start responding within this (504), and a worker that "
        "takes no message for this long while some wait is replaced (default 30)",
        False,
    ),
    (
        "graceful-timeout",
        "SECS",
        "time in-flight requests get after SIGTERM or a reload (default 30)",
        False,
    ),
    ("max-requests", "N", "replace a worker after N requests (default 0: never)", False),
    ("max-requests-jitter", "N", "add up to N to --max-requests, per worker (default 0)", False),
    (
        "max-worker-memory",
        "MIB",
        "replace a worker past this much private memory (default 0: never)",
        False,
    ),
    (
        "forwarded-allow-ips",
        "LIST",
        "peers trusted for X-Forwarded-* (comma list or *; default 127.0.0.1,::1)",
        False,
    ),
    ("root-path", "PATH", "ASGI root_path (WSGI SCRIPT_NAME)", False),
    ("limit-request-line", "N", "longest request line (default 4094; 414 beyond)", False),
    ("limit-request-fields", "N", "most header fields (default 100; 431 beyond)", False),
    ("limit-request-field-size", "N", "longest header field (default 8190; 431 beyond)", False),
    (
        "limit-request-head",
        "N",
        "longest request head, all lines (default 32768; 431 beyond)",
        False,
    ),
    (
        "limit-request-body",
        "N",
        "largest request body in bytes (default unlimited; 413 beyond)",
        False,
    ),
    ("keep-alive", "SECS", "idle keep-alive timeout (default 5)", False),
    ("header-timeout", "SECS", "a request head must arrive within this (default 10; 408)", False),
    (
        "write-timeout",
        "SECS",
        "drop a client that takes no response bytes for this long (default 30)",
        False,
    ),
    (
        "response-window",
        "BYTES",
        "response bytes a worker may send ahead of a slow client (default 256K)",
        False,
    ),
    ("access-log", "FILE", "write an access log (- for stdout)", False),
    ("access-logformat", "FMT", "gunicorn-style access log format", False),
    ("error-log", "FILE", "the server's and workers' stderr (default: stderr)", False),
    ("pid", "FILE", "write the server's pid to FILE", False),
    ("shm-dir", "DIR", "directory of the channel layer's shared memory (default /dev/shm)", False),
    ("lane-size", "BYTES", "bytes of each shared-memory lane (default 256K)", False),
]

SIGNALS = """\
signals:
  TERM, INT    stop gracefully (in-flight requests finish); a second INT stops at once
  QUIT         stop at once
  HUP          reload: new workers start, and each old one retires once a new one is ready
  TTIN, TTOU   one worker more, one fewer
  USR1         reopen the access and error logs
"""


def env_name(option: str) -> str:
    return "RINGWAY_" + option.upper().replace("-", "_")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringway",
        description="Serve a Django, ASGI or WSGI app: a Rust io_uring server, "
        "shared-memory channels, supervised Python workers. Every option can also "
        "be set as RINGWAY_<OPTION> in the environment (--max-requests: RINGWAY_MAX_REQUESTS).",
        epilog=SIGNALS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "app",
        nargs="?",
        metavar="APP",
        help="the application, as module:attribute (mysite.wsgi:application)",
    )
    p.add_argument("--version", action="version", version=f"ringway {__version__}")
    app = p.add_argument_group("the application")
    app.add_argument(
        "--interface",
        choices=["auto", "asgi", "asgi2", "wsgi"],
        help="what APP speaks (default auto: an async callable is ASGI 3)",
    )
    app.add_argument(
        "--threads",
        metavar="N",
        type=int,
        help="WSGI: threads per worker, one request each (default 1)",
    )
    app.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        help="ASGI: the event loop (default auto: uvloop if installed)",
    )
    app.add_argument("--chdir", metavar="DIR", help="change to DIR before loading the app")
    app.add_argument(
        "--env",
        metavar="KEY=VALUE",
        action="append",
        help="set an environment variable for the workers (repeatable)",
    )
    app.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="the workers' log level (default info)",
    )
    app.add_argument(
        "--check-config",
        action="store_true",
        help="check the options and import the app, then exit",
    )
    server = p.add_argument_group("the server")
    for name, metavar, help_, repeat in SERVER_OPTIONS:
        server.add_argument(
            f"--{name}",
            metavar=metavar,
            help=help_ + (" (repeatable)" if repeat else ""),
            action="append" if repeat else "store",
        )
    return p


def die(message: str, code: int = 2) -> NoReturn:
    print(f"ringway: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def from_env(ns: argparse.Namespace) -> None:
    """Fills the options not given on the command line from RINGWAY_*."""
    for dest in ("interface", "threads", "loop", "chdir", "log_level"):
        if getattr(ns, dest) is None and env_name(dest) in os.environ:
            value: Any = os.environ[env_name(dest)]
            setattr(ns, dest, int(value) if dest == "threads" else value)
    if ns.env is None and "RINGWAY_ENV" in os.environ:
        ns.env = [e for e in os.environ["RINGWAY_ENV"].split(",") if e]
    if ns.app is None:
        ns.app = os.environ.get("RINGWAY_APP")
    for name, _, _, repeat in SERVER_OPTIONS:
        dest = name.replace("-", "_")
        if getattr(ns, dest) is None and env_name(name) in os.environ:
            value = os.environ[env_name(name)]
            setattr(ns, dest, [v for v in value.split(",") if v] if repeat else value)


def server_args(ns: argparse.Namespace) -> list[str]:
    args: list[str] = []
    for name, _, _, repeat in SERVER_OPTIONS:
        value = getattr(ns, name.replace("-", "_"))
        if value is None:
            continue
        for v in value if repeat else [value]:
            args += [f"--{name}", str(v)]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    ns = parser().parse_args(argv)
    from_env(ns)
    if not ns.app:
        die("give the application as module:attribute (ringway mysite.wsgi:application)")
    if ns.chdir:
        try:
            os.chdir(ns.chdir)
        except OSError as e:
            die(f"--chdir {ns.chdir}: {e}")
    # The workers run `python -m ringway.worker` in this directory, which
    # puts it first on their path; the checks here look where they will.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for kv in ns.env or []:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            die(f"--env {kv!r}: expected KEY=VALUE")
        os.environ[key] = value
    if ns.threads is not None and ns.threads < 1:
        die("--threads must be at least 1")
    # A bad APP fails here, before anything starts or any socket is bound.
    try:
        _loader.find(ns.app)
    except _loader.AppLoadError as e:
        die(str(e))
    args = server_args(ns)
    if ns.check_config:
        check(ns, args)
        return
    worker_env = [
        ("RINGWAY_APP", ns.app),
        ("RINGWAY_INTERFACE", ns.interface or "auto"),
        ("RINGWAY_THREADS", str(ns.threads or 1)),
        ("RINGWAY_LOOP", ns.loop or "auto"),
        ("RINGWAY_LOG_LEVEL", ns.log_level or "info"),
        ("RINGWAY_ROOT_PATH", ns.root_path or ""),
    ]
    try:
        code = _native.serve(args, sys.executable, ["-m", "ringway.worker"], worker_env)
    except ValueError as e:
        die(str(e))
    sys.exit(code)


def check(ns: argparse.Namespace, args: list[str]) -> None:
    """--check-config: the options as the server reads them, and the app."""
    try:
        _native.check_config(args)
    except ValueError as e:
        die(str(e))
    try:
        app = _loader.load(ns.app)
    except _loader.AppLoadError as e:
        die(str(e), 1)
    kind = ns.interface or _loader.interface(app)
    print(f"ringway: configuration OK; {ns.app} is a {kind.upper()} application")
