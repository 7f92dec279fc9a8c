"""The ASGI worker and the ringway command, against the real server with real
worker processes over real sockets."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import APPS, RINGWAY, Ringway, alive, rss, wait_until

Start = Callable[..., Ringway]


def request(
    server: Ringway,
    method: str,
    path: str,
    body: bytes | None = None,
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


def test_a_raw_asgi_app_answers_with_the_scope_built_natively(ringway: Start) -> None:
    s = ringway("asgi_app:app")
    assert get(s, "/")[2] == b"Hello, world!"
    status, _, body = request(s, "GET", "/scope/a%20b?x=1", headers={"X-Test": "yes"})
    scope = json.loads(body)
    assert status == 200
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["path"] == "/scope/a b"
    assert scope["raw_path"] == "/scope/a%20b"
    assert scope["query_string"] == "x=1"
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == [s.addr[0], s.addr[1]]
    assert ["x-test", "yes"] in scope["headers"]
    assert "http.response.trailers" in scope["extensions"]
    assert "http.response.pathsend" in scope["extensions"]
    # Lifespan state reaches every request.
    assert scope["state"] == {"greeting": "from lifespan"}


def test_an_asgi2_app_is_served_through_the_wrapper(ringway: Start) -> None:
    s = ringway("asgi2_app:App", "--interface", "asgi2")
    assert get(s, "/x")[2] == b"asgi2 /x"


def test_request_bodies_stream_with_more_than_one_chunk_in_flight(ringway: Start) -> None:
    s = ringway("asgi_app:app")
    body = os.urandom(3 << 20)
    status, headers, echoed = request(s, "POST", "/echo", body=body)
    assert status == 200 and echoed == body
    assert int(headers["x-chunks"]) > 1


def test_trailers_and_early_hints(ringway: Start) -> None:
    s = ringway("asgi_app:app")
    c = s.connect()
    c.sendall(b"GET /trailers HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    assert b"transfer-encoding: chunked" in data
    assert data.endswith(b"0\r\nx-checksum: abc\r\n\r\n")
    c = s.connect()
    c.sendall(b"GET /early-hints HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    assert data.startswith(
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK"
    )
    assert data.endswith(b"final")


def test_lifespan_runs_once_per_worker_at_start_and_stop(ringway: Start, tmp_path: Path) -> None:
    record = tmp_path / "lifespan"
    s = ringway("asgi_app:app", "--workers", "2", env={"LIFESPAN_FILE": str(record)})
    assert get(s, "/")[0] == 200
    pids = sorted(s.worker_pids())
    started = record.read_text().split("\n")
    assert sorted(f"startup {p}" for p in pids) == sorted(
        x for x in started if x.startswith("startup")
    )
    assert s.stop() == 0
    lines = record.read_text().split()
    assert lines.count("shutdown") == 2, lines


def test_a_failing_lifespan_startup_stops_the_server_with_the_apps_message(tmp_path: Path) -> None:
    out = subprocess.run(
        [RINGWAY, "asgi_app:app", "--bind", "127.0.0.1:0"],
        cwd=APPS,
        env={**os.environ, "FAIL_STARTUP": "the database is not there"},
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 3, out
    assert b"the database is not there" in out.stderr
    assert b"listening at" not in out.stdout


def test_an_app_that_raises_before_its_response_gets_500_and_a_traceback(ringway: Start) -> None:
    s = ringway("asgi_app:app")
    status, _, _ = get(s, "/raise-before")
    assert status == 500
    s.wait_for_log("failed before the response on purpose")
    s.wait_for_log("Traceback (most recent call last)")
    assert get(s, "/")[0] == 200


def test_an_app_that_raises_after_its_response_started_closes_the_connection(
    ringway: Start,
) -> None:
    s = ringway("asgi_app:app")
    c = s.connect()
    c.sendall(b"GET /raise-after HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    # The head and the first chunk, then the connection closes without the
    # chunked body's end.
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in data and not data.endswith(b"0\r\n\r\n")
    s.wait_for_log("failed after the response started on purpose")


def test_an_app_that_returns_without_responding_gets_500(ringway: Start) -> None:
    s = ringway("asgi_app:app")
    assert get(s, "/no-response")[0] == 500
    s.wait_for_log("returned without sending a response")


def test_send_after_the_response_completed_raises(ringway: Start) -> None:
    s = ringway("asgi_app:app")
    assert get(s, "/send-after-end")[2] == b"done"
    s.wait_for_log("send after end raised: ASGI: http.response.body after the response completed")


def test_a_client_that_disconnects_mid_request_makes_receive_return_disconnect(
    ringway: Start,
) -> None:
    s = ringway("asgi_app:app")
    c = s.connect()
    c.sendall(b"POST /wait-disconnect?one HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nsome")
    s.wait_for_log("waiting for disconnect one")
    c.close()
    s.wait_for_log("got http.disconnect one")


def test_a_killed_worker_fails_its_request_with_502_and_is_replaced(ringway: Start) -> None:
    s = ringway("asgi_app:app", "--workers", "2")
    victim = s.worker_pids()
    results: dict[str, int] = {}

    def slow(name: str) -> None:
        results[name] = get(s, f"/sleep?ms=1500&{name}")[0]

    threads = [threading.Thread(target=slow, args=(f"n{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    s.wait_for_log("sleeping ms=1500", 4)
    pid = int(get(s, "/pid")[2])
    held = [line for line in s.stderr().splitlines() if "sleeping" in line]
    assert len(held) == 4
    os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join()
    # The requests on the killed worker failed with 502; the others succeeded.
    assert set(results.values()) <= {200, 502} and 200 in results.values(), results
    assert 502 in results.values(), results
    s.wait_for_log(" ready", 3)
    assert pid not in s.worker_pids() and len(s.worker_pids()) == 2
    assert all(get(s, "/")[0] == 200 for _ in range(10))
    assert set(victim) != set(s.worker_pids())


class Load:
    """Keep-alive clients posting in a loop; every failure is recorded."""

    def __init__(self, server: Ringway, clients: int) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self.stopping = False
        self.threads = [threading.Thread(target=self.run, args=(server, i)) for i in range(clients)]
        for t in self.threads:
            t.start()

    def run(self, server: Ringway, i: int) -> None:
        c = http.client.HTTPConnection(*server.addr, timeout=30)
        n = 0
        while not self.stopping:
            n += 1
            body = f"client {i} request {n}".encode()
            try:
                c.request("POST", "/echo", body=body)
                r = c.getresponse()
                got = r.read()
                if r.status == 200 and got == body:
                    self.ok += 1
                else:
                    self.failures.append(f"{r.status} {got[:80]!r}")
                if r.getheader("connection") == "close":
                    c.close()
                    c = http.client.HTTPConnection(*server.addr, timeout=30)
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(repr(e))
                c.close()
                c = http.client.HTTPConnection(*server.addr, timeout=30)

    def wait(self, n: int) -> None:
        target = self.ok + n
        wait_until(lambda: self.ok >= target, 60, f"load stalled at {self.ok}")

    def finish(self) -> int:
        self.stopping = True
        for t in self.threads:
            t.join()
        assert not self.failures, self.failures[:5]
        return self.ok


def test_sighup_under_load_replaces_the_workers_without_a_failed_request(ringway: Start) -> None:
    s = ringway("asgi_app:app", "--workers", "2")
    old = set(s.worker_pids())
    load = Load(s, 4)
    load.wait(300)
    s.signal(signal.SIGHUP)
    s.wait_for_log("reload complete")
    load.wait(300)
    wait_until(lambda: not any(alive(p) for p in old), 20, "old workers still running")
    load.finish()
    assert set(s.worker_pids()).isdisjoint(old)


def test_max_requests_recycles_workers_under_load_without_a_failed_request(ringway: Start) -> None:
    s = ringway(
        "asgi_app:app", "--workers", "2", "--max-requests", "200", "--max-requests-jitter", "20"
    )
    load = Load(s, 4)
    load.wait(1500)
    load.finish()
    # 1,500 requests over 2 workers of at most 220: each replaced at least
    # once, and every worker that asked got its replacement.
    s.wait_for_log("asks to be replaced", 2)
    asked = s.stderr().count("asks to be replaced")
    s.wait_for_log(" ready", 2 + asked)


def test_a_worker_that_prints_a_megabyte_does_not_hang(ringway: Start) -> None:
    s = ringway("asgi_app:app")
    assert get(s, "/print?n=1048576")[2] == b"printed"
    assert get(s, "/")[0] == 200


def test_a_slow_reader_slows_the_app_instead_of_filling_memory(ringway: Start) -> None:
    s = ringway("asgi_app:app")
    for _ in range(3):
        assert len(get(s, "/big?n=4000000")[2]) == 4_000_000
    base = s.rss()
    c = s.connect()
    c.sendall(b"GET /big?n=2000000000 HTTP/1.1\r\nHost: t\r\n\r\n")
    peak = base
    got = 0
    end = time.monotonic() + 8
    while time.monotonic() < end:
        got += len(c.recv(40_000))
        peak = max(peak, s.rss())
        time.sleep(0.1)
    c.close()
    assert got > 1_000_000
    assert peak - base < 24 << 20, f"grew {(peak - base) >> 20} MiB reading {got} bytes"


def test_a_mismatched_wire_protocol_version_fails_with_a_clear_message() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ringway.worker"],
        cwd=APPS,
        env={
            **os.environ,
            "RINGWAY_WIRE_VERSION": "999",
            "RINGWAY_APP": "asgi_app:app",
            "RINGWAY_SEGMENT": "/nonexistent",
            "RINGWAY_WORKER": "0",
        },
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 3
    assert b"wire protocol" in out.stderr and b"999" in out.stderr


def test_a_bad_app_path_fails_at_once_before_any_socket_is_bound() -> None:
    # The port is taken by us: had the server bound it first, the error
    # would be "address in use", not the app's.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    for app, why in [
        ("no_such_module:app", b"no module named 'no_such_module'"),
        ("broken_app:app", b"this app is broken on purpose"),
        ("asgi_app:missing", b"has no attribute 'missing'"),
        ("asgi_app", b"module:attribute"),
    ]:
        t = time.monotonic()
        out = subprocess.run(
            [RINGWAY, app, "--bind", f"127.0.0.1:{port}"], cwd=APPS, capture_output=True, timeout=60
        )
        assert out.returncode != 0, app
        assert why in out.stderr, (app, out.stderr)
        assert b"address in use" not in out.stderr, out.stderr
        assert time.monotonic() - t < 20
    taken.close()


def test_options_come_from_ringway_environment_variables(ringway: Start) -> None:
    s = ringway("asgi_app:app", env={"RINGWAY_WORKERS": "3", "RINGWAY_ROOT_PATH": "/base"})
    assert len(s.worker_pids()) == 3
    scope = json.loads(get(s, "/scope")[2])
    assert scope["root_path"] == "/base"


def test_check_config_checks_the_options_and_the_app() -> None:
    ok = subprocess.run(
        [RINGWAY, "asgi_app:app", "--check-config"], cwd=APPS, capture_output=True, timeout=60
    )
    assert ok.returncode == 0 and b"ASGI" in ok.stdout, ok
    bad = subprocess.run(
        [RINGWAY, "asgi_app:app", "--check-config", "--workers", "0"],
        cwd=APPS,
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2 and b"--workers" in bad.stderr, bad
    help_ = subprocess.run([RINGWAY, "--help"], capture_output=True, timeout=60)
    for option in [
        b"--interface",
        b"--threads",
        b"--reactors",
        b"--max-requests",
        b"--chdir",
        b"--env",
        b"--check-config",
        b"--log-level",
        b"--loop",
        b"--pid",
        b"--forwarded-allow-ips",
        b"--limit-request-line",
        b"RINGWAY_",
    ]:
        assert option in help_.stdout, option


def test_chdir_and_env_reach_the_workers(ringway: Start, tmp_path: Path) -> None:
    app = tmp_path / "envapp.py"
    app.write_text(
        "import os\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http': return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': os.environ['GREETING'].encode()})\n"
    )
    s = ringway("envapp:app", "--chdir", str(tmp_path), "--env", "GREETING=hi there", cwd="/")
    assert get(s, "/")[2] == b"hi there"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_term_and_int_stop_the_server_gracefully(ringway: Start, sig: int) -> None:
    s = ringway("asgi_app:app")
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(get(s, "/sleep?ms=1000&graceful")[0]))
    t.start()
    s.wait_for_log("sleeping ms=1000&graceful")
    s.signal(sig)
    t.join()
    assert result == [200]
    assert s.proc.wait(30) == 0
    assert rss(s.pid) == 0


def test_each_request_has_a_context_of_its_own(ringway: Start) -> None:
    # Context variables set by one request are not seen by the next, and a
    # token made before an await can be reset after it (asgiref and Django
    # rely on both).
    s = ringway("asgi_contextvars:app")
    for path in ["/a", "/b?await", "/c", "/d?await", "/e"]:
        status, _, body = get(s, path)
        assert (status, body) == (200, b"saw None; now None"), (path, body)
    assert "Exception" not in s.stderr(), s.stderr()


def test_sigusr1_reopens_logs_without_touching_the_workers(ringway: Start, tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    s = ringway("asgi_app:app", "--workers", "2", "--error-log", str(log))
    before = sorted(s.worker_pids())
    s.signal(signal.SIGUSR1)
    wait_until(lambda: "logs reopened" in log.read_text(), 10, "no reopen logged")
    assert get(s, "/")[0] == 200
    assert sorted(s.worker_pids()) == before
    assert "killed by signal" not in log.read_text()
