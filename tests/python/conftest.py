"""Fixtures for the Python worker's tests: the real `ringway` command on a
free port, real worker processes, real sockets.

`ringway(app, *options, cwd=..., env=...)` starts the server and waits for
its "listening at" line (never a sleep); the returned `Ringway` knows its
URL, its stderr so far, its process tree and their memory, and stops the
server at the end of the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
RINGWAY = str(Path(sys.executable).parent / "ringway")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return sorted(set(out))


def rss(pid: int) -> int:
    """VmRSS of a process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(") ", 1)[1][0]
        return state not in "ZX"
    except OSError:
        return False


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s: {what}")
        time.sleep(0.01)


class Ringway:
    """A running `ringway` server."""

    def __init__(self, proc: subprocess.Popen[bytes], err_path: str, url: str) -> None:
        self.proc = proc
        self.err_path = err_path
        self.url = url
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.addr = (host, int(port or 0))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 20) -> None:
        wait_until(
            lambda: self.stderr().count(text) >= count,
            timeout,
            f"{text!r} not logged {count} times:\n{self.stderr()}",
        )

    def worker_pids(self) -> list[int]:
        return children(self.pid)

    def rss(self) -> int:
        """Resident memory of the server and its workers together."""
        return sum(rss(p) for p in [self.pid, *self.worker_pids()])

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def connect(self) -> socket.socket:
        s = socket.create_connection(self.addr)
        s.settimeout(30)
        return s

    def stop(self) -> int:
        """SIGTERM, then waits up to 30 s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the server did not stop within 30 s:\n{self.stderr()}") from None


def start(
    app: str,
    *options: str,
    cwd: str | os.PathLike[str] = APPS,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> Ringway:
    """Starts `ringway APP --bind 127.0.0.1:0 OPTIONS` in `cwd`."""
    err = tempfile.NamedTemporaryFile(prefix="ringway-test-", suffix=".stderr", delete=False)
    args = [RINGWAY, app, *options]
    if not any(o.startswith("--bind") for o in options):
        args += ["--bind", "127.0.0.1:0"]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=err, env=full_env)
    server = Ringway(proc, err.name, "")
    if not wait:
        return server
    assert proc.stdout is not None
    line = b""
    while b"listening at" not in line:
        line = proc.stdout.readline()
        if not line:
            code = proc.wait(10)
            raise AssertionError(f"ringway exited ({code}) before listening:\n{server.stderr()}")
    url = next(w for w in line.decode().split() if w.startswith("http://")).rstrip(",")
    server = Ringway(proc, err.name, url)
    # Keep reading stdout (access log, what apps print) so nothing blocks.
    import threading

    def drain() -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass

    threading.Thread(target=drain, daemon=True).start()
    return server


@pytest.fixture
def ringway() -> Iterator[Callable[..., Ringway]]:
    """`ringway(app, *options, cwd=, env=)`: starts a server, stopped after the test."""
    started: list[Ringway] = []

    def make(app: str, *options: str, **kw: object) -> Ringway:
        s = start(app, *options, **kw)  # type: ignore[arg-type]
        started.append(s)
        return s

    yield make
    for s in started:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGQUIT)
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
        try:
            os.unlink(s.err_path)
        except OSError:
            pass
