"""The WSGI worker (PEP 3333, as gunicorn behaves) against the real server,
with real worker processes over real sockets. The app is
tests/python/apps/wsgi_app.py."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Ringway, rss, wait_until

Start = Callable[..., Ringway]
MIB = 1 << 20


def request(
    server: Ringway,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection(*server.addr, timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def get(server: Ringway, path: str) -> tuple[int, dict[str, str], bytes]:
    return request(server, "GET", path)


def environ_of(server: Ringway, head: bytes) -> dict[str, Any]:
    """The environ the app saw for a raw request `head` (to /environ)."""
    c = server.connect()
    c.sendall(head)
    data = read_to_end(c)
    assert data.startswith(b"HTTP/1.1 200 OK"), data
    return json.loads(data.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


def read_to_end(c: socket.socket) -> bytes:
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    return data


def read_until(c: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = c.recv(65536)
        assert chunk, f"the connection closed before {marker!r}: {data!r}"
        data += chunk
    return data


def reset(c: socket.socket) -> None:
    """Closes `c` with a reset, as a client that goes away does."""
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


class Peak:
    """The highest value `measure()` reaches while the block runs (sampled
    every 5 ms), and its value at entry."""

    def __init__(self, measure: Callable[[], int]) -> None:
        self.measure = measure
        self.base = self.peak = measure()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self.measure())

    def __enter__(self) -> Peak:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.measure())

    @property
    def growth(self) -> int:
        return self.peak - self.base


# ----- the environ -----------------------------------------------------------


def test_the_environ_has_what_pep_3333_and_cgi_ask_for(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    status, _, body = request(
        s,
        "POST",
        "/environ/a%20b/%E2%9C%93?x=1&y=%20",
        body=b"12345",
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Test": "yes"},
    )
    env = json.loads(body)
    assert status == 200
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    # Percent-decoded, as WSGI's bytes-as-latin-1 str.
    assert env["PATH_INFO"] == "/environ/a b/\u00e2\u009c\u0093"
    assert env["PATH_INFO"].encode("latin-1").decode() == "/environ/a b/\u2713"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["RAW_URI"] == "/environ/a%20b/%E2%9C%93?x=1&y=%20"
    assert env["SERVER_NAME"] == s.addr[0] and env["SERVER_PORT"] == str(s.addr[1])
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["CONTENT_TYPE"] == "text/plain; charset=utf-8"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_TEST"] == "yes"
    assert env["HTTP_HOST"] == f"{s.addr[0]}:{s.addr[1]}"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input"] == "Input"
    assert env["wsgi.errors"] == "stderr"
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] == "type"
    # An HTTP/1.0 request says so.
    env = environ_of(s, b"GET /environ HTTP/1.0\r\n\r\n")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "CONTENT_LENGTH" not in env


def test_header_names_with_underscores_are_dropped(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    env = environ_of(
        s,
        b"GET /environ HTTP/1.1\r\nHost: t\r\nX_Forwarded_For: 6.6.6.6\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nX_Only_Underscores: evil\r\nX-Dashes: fine\r\n"
        b"Connection: close\r\n\r\n",
    )
    # `X_Forwarded_For` must not pose as the header a trusted proxy sets.
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
    assert "HTTP_X_ONLY_UNDERSCORES" not in env
    assert not [v for v in env.values() if v in ("6.6.6.6", "evil")]
    assert env["HTTP_X_DASHES"] == "fine"


def test_repeated_headers_are_joined_and_cookies_with_semicolons(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    env = environ_of(
        s,
        b"GET /environ HTTP/1.1\r\nHost: t\r\nX-Multi: a\r\nCookie: a=1\r\nX-Multi: b\r\n"
        b"Cookie: b=2\r\nX-Multi: c, d\r\nConnection: close\r\n\r\n",
    )
    assert env["HTTP_X_MULTI"] == "a, b, c, d"
    assert env["HTTP_COOKIE"] == "a=1; b=2"


@pytest.mark.parametrize("how", ["option", "environment"])
def test_root_path_is_script_name_and_path_info_is_the_rest(ringway: Start, how: str) -> None:
    if how == "option":
        s = ringway("wsgi_app:app", "--root-path", "/app")
    else:
        s = ringway("wsgi_app:app", env={"RINGWAY_ROOT_PATH": "/app"})
    env = json.loads(get(s, "/environ/x%2Fy%20z?q=%2F")[2])
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/environ/x/y z"
    assert env["QUERY_STRING"] == "q=%2F"


# ----- threads ---------------------------------------------------------------


def test_with_four_threads_four_slow_requests_run_at_once(ringway: Start) -> None:
    s = ringway("wsgi_app:app", "--threads", "4")
    assert json.loads(get(s, "/environ")[2])["wsgi.multithread"] is True
    results: list[bytes] = []

    def one() -> None:
        results.append(get(s, "/sleep?s=0.5")[2])

    threads = [threading.Thread(target=one) for _ in range(4)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    assert results == [b"slept"] * 4
    # One at a time would take 2 s.
    assert took < 1.3, f"4 requests of 0.5 s took {took:.2f} s"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_requests_waiting_for_a_thread_still_get_their_bodies(ringway: Start, threads: str) -> None:
    # More uploads than threads: the waiting ones' chunks (and the running
    # ones') must reach them while the others run.
    s = ringway("wsgi_app:app", "--threads", threads)
    bodies = [os.urandom(2 * MIB + i) for i in range(3)]
    results: dict[int, bytes] = {}

    def upload(i: int) -> None:
        results[i] = request(s, "POST", "/upload", body=bodies[i])[2]

    threads_ = [threading.Thread(target=upload, args=(i,)) for i in range(3)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    for i, body in enumerate(bodies):
        assert results[i] == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


# ----- wsgi.input ------------------------------------------------------------

LINES = b"".join(b"line %d %s\n" % (i, b"y" * (i * 37 % 300)) for i in range(2000))


def pieces(how: str) -> int:
    """How many pieces the app's reads of LINES return, read `how`."""
    lines = LINES.splitlines(keepends=True)
    if how == "read":
        return 1
    if how == "read-n":
        return -(-len(LINES) // 1000)
    if how == "readline":  # readline(100)
        return sum(-(-len(line) // 100) for line in lines)
    return len(lines)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_wsgi_input_reads_the_body_every_way(ringway: Start, framing: str) -> None:
    s = ringway("wsgi_app:app")
    for how in ("read", "read-n", "readline", "lines", "readlines"):
        if framing == "chunked":
            # Uneven chunks, several layer messages' worth.
            body: bytes | Iterator[bytes] = iter(
                [LINES[i : i + 7777] for i in range(0, len(LINES), 7777)]
            )
        else:
            body = LINES
        status, _, data = request(s, "POST", f"/read?how={how}", body=body)
        assert status == 200, data
        result = json.loads(data)
        assert result["length"] == len(LINES), how
        assert result["sha256"] == hashlib.sha256(LINES).hexdigest(), how
        assert result["pieces"] == pieces(how), how
        assert result["content_length"] == (
            str(len(LINES)) if framing == "content-length" else None
        )
    # No body reads as empty.
    result = json.loads(request(s, "POST", "/read?how=read", body=b"")[2])
    assert (result["length"], result["content_length"]) == (0, "0")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_20_mib_upload_streams_to_the_app_with_bounded_worker_memory(
    ringway: Start, tmp_path: Path, threads: str
) -> None:
    s = ringway("wsgi_app:app", "--threads", threads)
    (worker,) = s.worker_pids()
    # Warm up the allocator on a smaller upload.
    warm = os.urandom(2 * MIB)
    assert request(s, "POST", f"/upload?file={tmp_path / 'warm'}", body=warm)[0] == 200
    body = os.urandom(20 * MIB)
    marker = tmp_path / "progress"
    c = s.connect()
    c.sendall(
        f"POST /upload?file={marker} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    with Peak(lambda: rss(worker)) as peak:
        # The app reads the start of the body while the rest has not been
        # sent: it streams, it is not collected first.
        c.sendall(body[: 2 * MIB])
        wait_until(marker.exists, 20, "the app did not get the first MiB of a streamed body")
        view = memoryview(body)
        for at in range(2 * MIB, len(body), 65536):
            c.sendall(view[at : at + 65536])
        data = read_to_end(c)
    assert data.endswith(f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()), data[-200:]
    # The app reads slower than the client sends: what waits for it is
    # bounded by the body window (256 KiB), not the body. (A bound above
    # the body's 20 MiB could not tell the two apart.)
    assert peak.growth < 8 * MIB, f"the worker grew {peak.growth / MIB:.1f} MiB"


@pytest.mark.parametrize("threads", ["1", "3"])
def test_a_client_that_disconnects_mid_body_makes_the_read_raise_an_oserror(
    ringway: Start, tmp_path: Path, threads: str
) -> None:
    s = ringway("wsgi_app:app", "--threads", threads)
    marker = tmp_path / "read"
    c = s.connect()
    c.sendall(
        f"POST /disconnect?file={marker} HTTP/1.1\r\nHost: t\r\n"
        f"Content-Length: {10 * MIB}\r\n\r\n".encode()
        + b"z" * 300_000
    )
    wait_until(marker.exists, 20, "the app did not start reading")
    reset(c)
    wait_until(
        lambda: marker.read_text() != "reading\n",
        20,
        "the app's read did not end when its client left",
    )
    assert marker.read_text() == "reading\nClientDisconnected OSError=True"
    # The worker serves on.
    assert get(s, "/")[2] == b"Hello, world!"


# ----- the response ----------------------------------------------------------


def test_write_sends_at_once_before_the_returned_iterable(ringway: Start, tmp_path: Path) -> None:
    s = ringway("wsgi_app:app")
    c = s.connect()
    c.settimeout(10)
    c.sendall(f"GET /write?file={tmp_path / 'w'} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    # write(b"") sends the head; each write() its bytes, before the app
    # goes on (it waits for the test to have read them).
    data = read_until(c, b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in data
    (tmp_path / "w.1").touch()
    data += read_until(c, b"written, ")
    (tmp_path / "w.2").touch()
    data += read_until(c, b"\r\n0\r\n\r\n")
    assert data.endswith(b"9\r\nwritten, \r\n5\r\nthen \r\n8\r\nreturned\r\n0\r\n\r\n")


def test_content_length_lists_and_file_wrapper(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    # More bytes than the content-length given: the rest is dropped.
    status, headers, body = get(s, "/content-length")
    assert (status, headers["content-length"], body) == (200, "5", b"abcde")
    # A list's length is known: said, even when it goes in several messages.
    status, headers, body = get(s, "/big?n=3000000")
    assert (status, headers["content-length"], body) == (200, "3000000", b"b" * 3_000_000)
    assert get(s, "/")[1]["content-length"] == "13"
    status, _, body = get(s, "/file?n=1000000")
    assert body == bytes(range(256)) * (1_000_000 // 256)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_slow_reader_of_a_streamed_response_slows_the_generator(
    ringway: Start, tmp_path: Path, threads: str
) -> None:
    s = ringway("wsgi_app:app", "--threads", threads)
    progress = tmp_path / "produced"
    c = socket.socket()
    # A small receive buffer (no autotuning): the client really is slow.
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.settimeout(30)
    c.connect(s.addr)
    with Peak(s.rss) as peak:
        c.sendall(f"GET /stream?n={256 * MIB}&file={progress} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        got = 0
        for _ in range(10):
            # A client reading 128 KiB now and then.
            target = got + 128 * 1024
            while got < target:
                chunk = c.recv(65536)
                assert chunk, "the response ended early"
                got += len(chunk)
            time.sleep(0.1)
        produced = int(progress.read_text())
    reset(c)
    # Ahead of the client: the socket buffers, the reactor's queue and the
    # response window, not the 256 MiB the generator would make.
    assert produced - got < 12 * MIB, f"produced {produced >> 20} MiB, read {got >> 20} MiB"
    assert peak.growth < 32 * MIB, f"the server and worker grew {peak.growth >> 20} MiB"


def test_close_is_called_when_the_response_completes(ringway: Start, tmp_path: Path) -> None:
    s = ringway("wsgi_app:app")
    marker = tmp_path / "closed"
    assert get(s, f"/close?file={marker}")[2] == b"one two"
    wait_until(lambda: marker.read_text() == "closed", 10, "close() was not called")


def test_close_is_called_when_the_iterable_fails(ringway: Start, tmp_path: Path) -> None:
    s = ringway("wsgi_app:app")
    marker = tmp_path / "closed"
    c = s.connect()
    c.sendall(f"GET /close?how=fail&file={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    read_to_end(c)
    wait_until(lambda: marker.exists() and marker.read_text() == "closed", 10, "no close()")
    s.wait_for_log("the iterable failed on purpose")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_close_is_called_when_the_client_leaves_mid_response(
    ringway: Start, tmp_path: Path, threads: str
) -> None:
    s = ringway("wsgi_app:app", "--threads", threads)
    marker = tmp_path / "closed"
    c = s.connect()
    c.sendall(f"GET /close?how=stream&file={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    read_until(c, b"xxxxxxxx")
    # The iterable is endless: leaving must end it.
    reset(c)
    wait_until(lambda: marker.exists() and marker.read_text() == "closed", 20, "no close()")
    assert get(s, "/")[2] == b"Hello, world!"


def test_exc_info_before_the_head_is_sent_replaces_the_response(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    status, headers, body = get(s, "/exc-info-before")
    assert (status, headers["x-why"], body) == (503, "exc_info", b"the app's own error page")


def test_exc_info_after_the_head_is_sent_reraises_and_closes_the_connection(
    ringway: Start, tmp_path: Path
) -> None:
    s = ringway("wsgi_app:app")
    sent = tmp_path / "partial-read"
    c = s.connect()
    c.sendall(f"GET /exc-info-after?file={sent} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = read_until(c, b"partial")
    sent.touch()
    data += read_to_end(c)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"never sent" not in data and not data.endswith(b"0\r\n\r\n")
    s.wait_for_log("KeyError: 'too late to change the response'")


def test_start_response_twice_without_exc_info_is_an_error(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    assert get(s, "/start-twice")[0] == 500
    s.wait_for_log("start_response() called a second time without exc_info")


# ----- errors ----------------------------------------------------------------


def test_an_exception_before_start_response_gets_500_and_a_traceback(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    status, _, _ = get(s, "/raise-before")
    assert status == 500
    s.wait_for_log("RuntimeError: failed before the response on purpose")
    s.wait_for_log("Traceback (most recent call last)")
    assert get(s, "/")[0] == 200


def test_an_exception_after_the_response_started_closes_the_connection(
    ringway: Start, tmp_path: Path
) -> None:
    s = ringway("wsgi_app:app")
    sent = tmp_path / "partial-read"
    c = s.connect()
    c.sendall(f"GET /raise-after?file={sent} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = read_until(c, b"partial")
    sent.touch()
    data += read_to_end(c)
    # The head and the first chunk, then the connection closes without the
    # chunked body's end.
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert not data.endswith(b"0\r\n\r\n")
    s.wait_for_log("failed after the response started on purpose")
    assert get(s, "/")[0] == 200


def test_an_app_that_returns_without_start_response_gets_500(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    assert get(s, "/no-start")[0] == 500
    s.wait_for_log("the WSGI app returned without calling start_response(): GET /no-start")


# ----- the process -----------------------------------------------------------


def listening(s: Ringway) -> tuple[str, queue.Queue[bytes]]:
    """For a server started with `wait=False`: waits for its "listening at"
    line; returns the address it names and the lines of stdout after it."""
    stdout = s.proc.stdout
    assert stdout is not None
    while b"listening at" not in (line := stdout.readline()):
        assert line, f"ringway exited before listening:\n{s.stderr()}"
    lines: queue.Queue[bytes] = queue.Queue()

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return line.decode().split("listening at ")[1].split()[0].rstrip(","), lines


def test_print_and_logging_from_the_app_reach_stdout_and_stderr(ringway: Start) -> None:
    # As under a service manager: stdout is a pipe, and Python is not told
    # to leave it unbuffered.
    s = ringway("wsgi_app:app", wait=False, env={"PYTHONUNBUFFERED": ""})
    url, lines = listening(s)
    s = Ringway(s.proc, s.err_path, url)
    assert get(s, "/print?text=one")[2] == b"printed"
    # Line by line, as on a terminal: there while the worker runs.
    assert lines.get(timeout=10) == b"printed by the app: one\n"
    assert get(s, "/log?text=two")[2] == b"logged"
    s.wait_for_log("logged by the app: two")


def test_on_a_unix_socket_the_host_header_names_the_server(ringway: Start, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    s = ringway("wsgi_app:app", "--bind", f"unix:{path}", wait=False)
    assert listening(s)[0] == f"unix:{path}"
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(30)
    c.connect(str(path))
    c.sendall(b"GET /environ HTTP/1.1\r\nHost: example.org:81\r\nConnection: close\r\n\r\n")
    env = json.loads(read_to_end(c).split(b"\r\n\r\n", 1)[1])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "81")
    assert env["REMOTE_ADDR"] == "" and "REMOTE_PORT" not in env


def test_max_requests_has_the_worker_replaced(ringway: Start) -> None:
    s = ringway("wsgi_app:app", "--max-requests", "3")
    (first,) = s.worker_pids()
    for _ in range(3):
        assert get(s, "/")[0] == 200
    s.wait_for_log("asks to be replaced: --max-requests: 3 served")
    wait_until(lambda: first not in s.worker_pids(), 20, "the worker was not replaced")
    assert get(s, "/")[0] == 200


@pytest.mark.parametrize("threads", ["1", "4"])
def test_sigterm_stops_a_busy_worker_at_once(ringway: Start, tmp_path: Path, threads: str) -> None:
    # At the end of a graceful stop the supervisor sends SIGTERM to a worker
    # that still runs a request: it leaves at once, not at the SIGKILL 5 s
    # later.
    s = ringway("wsgi_app:app", "--threads", threads, "--graceful-timeout", "1")
    running = tmp_path / "running"
    c = s.connect()
    c.sendall(f"GET /sleep?s=60&file={running} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    wait_until(running.exists, 10, "the app is not running")
    began = time.monotonic()
    assert s.stop() == 0
    took = time.monotonic() - began
    assert took < 3.5, f"stopping took {took:.1f} s"
    assert "killed by signal" not in s.stderr()


def test_sigusr1_reopens_logs_without_killing_workers(ringway: Start) -> None:
    s = ringway("wsgi_app:app")
    before = s.worker_pids()
    s.signal(signal.SIGUSR1)
    s.wait_for_log("logs reopened")
    assert get(s, "/")[0] == 200
    assert s.worker_pids() == before
