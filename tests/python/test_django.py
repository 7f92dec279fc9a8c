"""The example Django site (examples/django) served by the real `ringway`
command, over WSGI and over ASGI: pages, a CSRF-protected form, a large
upload streamed to disk, a large streamed response read slowly, cookies and
repeated headers, the 404 and 500 pages, static files from WhiteNoise.

The client side is the standard library only (http.client, socket).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest
from conftest import ROOT, Ringway, rss

if TYPE_CHECKING:
    from typing import Self

EXAMPLE = ROOT / "examples" / "django"
MIB = 1024 * 1024

Response = tuple[http.client.HTTPResponse, bytes]


@pytest.fixture(scope="session")
def static_collected() -> None:
    """`manage.py collectstatic`, as a deployment runs it, once per session."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=EXAMPLE,
        check=True,
        capture_output=True,
    )


@pytest.fixture(
    params=["mysite.wsgi:application", "mysite.asgi:application"],
    ids=["wsgi", "asgi"],
)
def app(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def site(ringway: Callable[..., Ringway], app: str, static_collected: None) -> Ringway:
    """The example site on one worker (so the tests know whose memory to watch)."""
    return ringway(
        app,
        "--workers",
        "1",
        cwd=EXAMPLE,
        env={"DJANGO_SETTINGS_MODULE": "mysite.settings"},
    )


def connect(site: Ringway) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*site.addr, timeout=30)


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def cookies(resp: http.client.HTTPResponse) -> SimpleCookie:
    jar = SimpleCookie()
    for header in resp.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return jar


def csrf(conn: http.client.HTTPConnection, path: str) -> tuple[str, str]:
    """GETs the form at `path` as a browser does: returns the CSRF cookie's
    value and the form's hidden token."""
    resp, body = request(conn, "GET", path)
    assert resp.status == 200, body
    cookie = cookies(resp)["csrftoken"].value
    m = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert m is not None, body
    return cookie, m.group(1).decode()


class PeakGrowth:
    """How far `measure()` (resident bytes) rises above its value at entry
    while the block runs, sampled every 5 ms by a thread."""

    def __init__(self, measure: Callable[[], int]) -> None:
        self.measure = measure
        self.baseline = 0
        self.peak = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.stopped.wait(0.005):
            self.peak = max(self.peak, self.measure())

    def __enter__(self) -> Self:
        self.baseline = self.peak = self.measure()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.peak = max(self.peak, self.measure())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


# ----- pages -------------------------------------------------------------


def test_home_page_renders_its_template_and_logs_no_error(site: Ringway, app: str) -> None:
    interface = "WSGI" if ".wsgi:" in app else "ASGI"
    conn = connect(site)
    for _ in range(3):  # the same connection, kept alive
        resp, body = request(conn, "GET", "/")
        assert resp.status == 200, body
        assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
        assert b"<h1>Hello from Django on ringway</h1>" in body
        assert f'<strong id="interface">{interface}</strong>'.encode() in body
    # Django logs a 404 on the worker's stderr: once that line is in, what
    # the worker logged about the requests before it is in too.
    resp, _ = request(conn, "GET", "/log-marker/")
    assert resp.status == 404
    site.wait_for_log("Not Found: /log-marker/")
    err = site.stderr()
    assert "Traceback" not in err, err


def test_not_found_page_is_the_sites_404_template(site: Ringway) -> None:
    conn = connect(site)
    # A UTF-8 path, percent-encoded: the app sees it decoded (WSGI's
    # PATH_INFO is latin-1 text of the raw bytes, which Django re-decodes),
    # and Django's 404 page quotes it again.
    resp, body = request(conn, "GET", "/no-such-caf%C3%A9/page/")
    assert resp.status == 404, body
    assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
    assert b"<h1>Not found (404)</h1>" in body
    assert b'<code id="path">/no-such-caf%C3%A9/page/</code>' in body
    # Django's log line escapes what is not ASCII: é is U+00E9, one character.
    site.wait_for_log(r"Not Found: /no-such-caf\xe9/page/")


def test_view_that_raises_gets_the_500_page_and_its_traceback_is_logged(
    site: Ringway,
) -> None:
    conn = connect(site)
    resp, body = request(conn, "GET", "/boom/")
    assert resp.status == 500, body
    assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
    # DEBUG=False: the site's 500 page, nothing of the exception.
    assert b"<h1>Server error (500)</h1>" in body
    assert b"RuntimeError" not in body and b"Traceback" not in body
    site.wait_for_log("RuntimeError: boom: this view always fails")
    err = site.stderr()
    assert "Internal Server Error: /boom/" in err, err
    assert "Traceback (most recent call last)" in err, err
    assert 'views.py", line' in err and "in boom" in err, err
    # The worker lives on and the connection too.
    resp, body = request(conn, "GET", "/")
    assert resp.status == 200, body


# ----- a form with CSRF protection -----------------------------------------


def test_form_post_with_csrf_token_is_accepted_and_echoed(site: Ringway) -> None:
    conn = connect(site)
    cookie, token = csrf(conn, "/form/")
    assert token != cookie  # Django masks the token in the page
    form = urlencode(
        {
            "csrfmiddlewaretoken": token,
            "name": "Zoë & <friends>",
            "message": "1 + 1 = 2; 100% sure ✓",
        }
    )
    resp, body = request(
        conn,
        "POST",
        "/form/",
        body=form.encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={cookie}",
            "Origin": site.url,
        },
    )
    assert resp.status == 200, body
    text = body.decode()
    assert '<strong id="posted-name">Zoë &amp; &lt;friends&gt;</strong>' in text
    assert '<blockquote id="posted-message">1 + 1 = 2; 100% sure ✓</blockquote>' in text


@pytest.mark.parametrize(
    "with_cookie, with_token",
    [(False, False), (True, False), (False, True)],
    ids=["no-cookie-no-token", "cookie-only", "token-only"],
)
def test_form_post_without_both_csrf_cookie_and_token_is_forbidden(
    site: Ringway, with_cookie: bool, with_token: bool
) -> None:
    conn = connect(site)
    cookie, token = csrf(conn, "/form/")
    fields = {"name": "Mallory", "message": "forged"}
    if with_token:
        fields["csrfmiddlewaretoken"] = token
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if with_cookie:
        headers["Cookie"] = f"csrftoken={cookie}"
    resp, body = request(conn, "POST", "/form/", body=urlencode(fields).encode(), headers=headers)
    assert resp.status == 403, body
    assert b"CSRF verification failed" in body
    assert b"Mallory" not in body


# ----- a large upload --------------------------------------------------------


class StreamedUpload:
    """A multipart/form-data body with a CSRF token and a file of `size`
    pseudo-random bytes, generated 64 KiB at a time as it is sent; `sha256`
    is the file's digest once the body has been sent."""

    CHUNK = 64 * 1024

    def __init__(self, token: str, filename: str, size: int) -> None:
        self.size = size
        self.sha256 = hashlib.sha256()
        self.boundary = "----ringway" + secrets.token_hex(16)
        self.head = (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n'
            f"{token}\r\n"
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        rng = random.Random(self.size)
        left = self.size
        while left:
            chunk = rng.randbytes(min(self.CHUNK, left))
            self.sha256.update(chunk)
            left -= len(chunk)
            yield chunk
        yield self.tail

    def post(self, conn: http.client.HTTPConnection, site: Ringway, cookie: str) -> dict[str, str]:
        """POSTs the body to /upload/; returns what the page reports."""
        resp, body = request(
            conn,
            "POST",
            "/upload/",
            body=iter(self),
            headers={
                "Content-Type": f"multipart/form-data; boundary={self.boundary}",
                "Content-Length": str(len(self)),
                "Cookie": f"csrftoken={cookie}",
                "Origin": site.url,
            },
        )
        assert resp.status == 200, body
        found = dict(re.findall(rb'<dd id="(\w+)">([^<]*)</dd>', body))
        return {k.decode(): v.decode() for k, v in found.items()}


def test_upload_of_20_mib_goes_to_disk_with_bounded_worker_memory(
    site: Ringway,
) -> None:
    conn = connect(site)
    cookie, token = csrf(conn, "/upload/")
    # A small upload first: the code paths are loaded before measuring.
    small = StreamedUpload(token, "small.bin", 1000)
    result = small.post(conn, site, cookie)
    assert result["size"] == "1000"
    assert result["sha256"] == small.sha256.hexdigest()
    assert result["stored"] == "memory"

    workers = site.worker_pids()
    assert len(workers) == 1, workers
    big = StreamedUpload(token, "big.bin", 20 * MIB)
    with PeakGrowth(lambda: sum(rss(p) for p in workers)) as worker_memory:
        result = big.post(conn, site, cookie)
    assert result["name"] == "big.bin"
    assert result["size"] == str(20 * MIB)
    assert result["sha256"] == big.sha256.hexdigest()
    assert result["stored"] == "a temporary file"
    assert worker_memory.growth < 40 * MIB, (
        f"the worker grew by {worker_memory.growth / MIB:.1f} MiB "
        f"({worker_memory.baseline / MIB:.1f} to {worker_memory.peak / MIB:.1f})"
    )


# ----- a large streamed response, read slowly ---------------------------------


def test_slow_reader_of_a_200_mb_csv_keeps_server_and_worker_memory_bounded(
    site: Ringway,
) -> None:
    conn = connect(site)
    # A small report first: the code paths are loaded before measuring.
    resp, body = request(conn, "GET", "/report.csv?rows=3")
    assert resp.status == 200, body
    assert resp.getheader("Content-Type") == "text/csv"
    assert body.decode().splitlines() == [
        "id,name,square,note",
        *(
            f'{i},item {i},{i * i},"generated lazily, one chunk at a time, as the client reads"'
            for i in range(3)
        ),
    ]

    rows = 2_000_000  # about 200 MB
    rate = 1_000_000  # bytes per second
    seconds = 4.0
    slow = connect(site)
    slow.connect()
    assert slow.sock is not None
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    with PeakGrowth(site.rss) as memory:
        slow.request("GET", f"/report.csv?rows={rows}")
        resp = slow.getresponse()
        assert resp.status == 200
        # Read at `rate`, checking that the rows arrive whole and in order.
        received, pending, expect = 0, b"", -1
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            if received > rate * elapsed:
                time.sleep(0.02)  # the client's pace, not a wait for readiness
                continue
            data = resp.read1(32 * 1024)
            assert data, "the response ended early"
            received += len(data)
            *lines, pending = (pending + data).split(b"\r\n")
            for line in lines:
                if expect == -1:
                    assert line == b"id,name,square,note"
                else:
                    assert line.startswith(f"{expect},item {expect},".encode()), line
                expect += 1
        slow.close()
    assert received > 0.25 * rate * seconds, f"only {received} bytes came in {seconds} s"
    assert memory.growth < 32 * MIB, (
        f"server and worker grew by {memory.growth / MIB:.1f} MiB "
        f"({memory.baseline / MIB:.1f} to {memory.peak / MIB:.1f}) "
        f"while a client read {received / 1e6:.1f} MB"
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_client_that_leaves_mid_stream_stops_its_response_being_generated(
    site: Ringway,
) -> None:
    conn = connect(site)
    resp, body = request(conn, "GET", "/report.csv?rows=3")
    assert resp.status == 200, body
    [worker] = site.worker_pids()
    leaver = connect(site)
    leaver.request("GET", "/report.csv?rows=2000000")  # about 200 MB
    resp = leaver.getresponse()
    assert resp.status == 200
    taken = 0
    while taken < MIB:
        data = resp.read1(64 * 1024)
        assert data, "the response ended early"
        taken += len(data)
    before = cpu_seconds(worker)
    leaver.close()
    # The one worker answers once it has dropped the abandoned report; the
    # rest of it would cost seconds of CPU to generate.
    resp, body = request(conn, "GET", "/")
    assert resp.status == 200, body
    spent = cpu_seconds(worker) - before
    assert spent < 1.0, f"the worker spent {spent:.2f} s of CPU after the client left"
    # Nor does it go on generating in the background.
    idle_from = cpu_seconds(worker)
    time.sleep(1.0)  # a window to observe that nothing happens, not a readiness wait
    spent = cpu_seconds(worker) - idle_from
    assert spent < 0.1, f"the worker spent {spent:.2f} s of CPU in 1 s with nothing to do"


# ----- cookies and repeated headers ------------------------------------------


def test_cookies_and_repeated_headers_round_trip(site: Ringway) -> None:
    conn = connect(site)
    resp, body = request(conn, "GET", "/echo/")
    assert resp.status == 200, body
    # Two cookies set: two Set-Cookie header lines.
    assert len(resp.headers.get_all("Set-Cookie") or []) == 2
    jar = cookies(resp)
    assert jar["flavour"].value == "oatmeal"
    assert jar["flavour"]["path"] == "/"
    assert jar["note"].value == "hello world"
    assert jar["note"]["httponly"] is True
    assert jar["note"]["samesite"] == "Lax"
    assert jar["note"]["max-age"] == "3600"

    # Back as a browser sends them, with one of its own and a header twice.
    sent = "; ".join(f"{m.key}={m.coded_value}" for m in jar.values())
    conn.putrequest("GET", "/echo/")
    conn.putheader("Cookie", f"{sent}; theme=dark")
    conn.putheader("X-Tag", "first")
    conn.putheader("X-Tag", "second")
    conn.putheader("X-Single", "one, with a comma")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, body
    echoed = json.loads(body)
    assert echoed["cookies"] == {
        "flavour": "oatmeal",
        "note": "hello world",
        "theme": "dark",
    }
    # Repeated fields reach the app as one, joined by commas (RFC 9110 5.3;
    # CGI and PEP 3333 for WSGI, Django's ASGIRequest for ASGI).
    tags = [t.strip() for t in echoed["headers"]["X-Tag"].split(",")]
    assert tags == ["first", "second"]
    assert echoed["headers"]["X-Single"] == "one, with a comma"


# ----- static files --------------------------------------------------------


def test_static_file_is_served_by_whitenoise(site: Ringway) -> None:
    source = (EXAMPLE / "pages" / "static" / "pages" / "style.css").read_bytes()
    conn = connect(site)
    resp, page = request(conn, "GET", "/")
    assert resp.status == 200, page
    # collectstatic's hashed name, as the template links it.
    m = re.search(rb'href="(/static/pages/style\.[0-9a-f]{12}\.css)"', page)
    assert m is not None, page
    url = m.group(1).decode()

    resp, body = request(conn, "GET", url)
    assert resp.status == 200, body
    assert resp.getheader("Content-Type", "").startswith("text/css")
    assert body == source
    # A hashed name never changes content: cached for good.
    assert "immutable" in resp.getheader("Cache-Control", "")
    etag = resp.getheader("ETag")
    assert etag

    resp, body = request(conn, "GET", url, headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200, body
    assert resp.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(body) == source

    # A revalidation: 304 with no body, and the connection goes on.
    resp, body = request(conn, "GET", url, headers={"If-None-Match": etag})
    assert resp.status == 304
    assert body == b""
    resp, body = request(conn, "GET", "/static/pages/style.css")
    assert resp.status == 200, body
    assert body == source
