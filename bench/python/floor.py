"""What the app alone costs per request, with no server: the floor under
every server of `scripts/bench python`, on one core.

    python floor.py asgi [SECONDS]         hello_asgi.app, driven by hand
    python floor.py django-wsgi [SECONDS]  benchsite.wsgi.application in a loop
    python floor.py django-asgi [SECONDS]  benchsite.asgi.application on uvloop

Prints one line: "REQUESTS_PER_S US_PER_REQUEST". Each call gets what a
server would hand over for `GET /` with only a Host header (wrk's request),
the response is checked once, and the loop runs for SECONDS (default 2)
after a warm-up of a quarter of that.

- asgi: the coroutine is stepped with send(None) until it returns; its
  receive and send are coroutine functions that do nothing. No event loop:
  this is the app's own Python, the least any ASGI server can add it to.
- django-wsgi: the environ PEP 3333 requires (a fresh copy each call),
  start_response that keeps the status, the body iterated and close()d
  (which sends request_finished). Django's own cost: middleware, URL
  resolution, the view, the response.
- django-asgi: one coroutine awaits the app again and again on a uvloop
  loop; receive gives the empty body, then waits until Django cancels it.
  This includes what Django's ASGI handler adds: a task for the request and
  one listening for a disconnect, and the sync view (and sync middleware)
  run in its single thread-sensitive executor thread (asgiref's
  sync_to_async), a thread hop each way per request.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

HELLO = b"Hello, world!"
HOST = "127.0.0.1:8000"


def timed(call, seconds: float) -> float:
    """Calls `call()` for `seconds` after a warm-up; returns calls per second."""
    end = time.perf_counter() + seconds / 4
    while time.perf_counter() < end:
        for _ in range(100):
            call()
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(100):
            call()
        n += 100
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


def asgi_scope() -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", HOST.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def floor_asgi(seconds: float) -> float:
    from hello_asgi import app

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    async def send_check(message: dict) -> None:
        sent.append(message)

    def drive(send=send) -> None:
        coro = app(asgi_scope(), receive, send)
        try:
            while True:
                coro.send(None)
        except StopIteration:
            pass

    drive(send_check)
    assert sent[0]["status"] == 200 and sent[1]["body"] == HELLO, sent
    return timed(drive, seconds)


def wsgi_environ() -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": HOST,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def floor_django_wsgi(seconds: float) -> float:
    from benchsite.wsgi import application

    base = wsgi_environ()
    status: list[str] = []

    def start_response(s, headers, exc_info=None):
        status.append(s)

    def call() -> bytes:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = application(environ, start_response)
        try:
            return b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    body = call()
    assert status[-1] == "200 OK" and body == HELLO, (status, body)
    return timed(call, seconds)


def floor_django_asgi(seconds: float) -> float:
    import uvloop
    from benchsite.asgi import application

    sent: list[dict] = []

    def receiver():
        first = True

        async def receive() -> dict:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            # Django listens for a disconnect and cancels this once done.
            await asyncio.get_running_loop().create_future()
            raise AssertionError("unreachable")

        return receive

    async def send(message: dict) -> None:
        pass

    async def send_check(message: dict) -> None:
        sent.append(message)

    async def run() -> float:
        await application(asgi_scope(), receiver(), send_check)
        assert sent[0]["status"] == 200 and sent[1]["body"] == HELLO, sent
        for phase in (seconds / 4, seconds):
            n = 0
            start = time.perf_counter()
            end = start + phase
            while True:
                for _ in range(20):
                    await application(asgi_scope(), receiver(), send)
                n += 20
                now = time.perf_counter()
                if now >= end:
                    break
        return n / (now - start)

    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


FLOORS = {"asgi": floor_asgi, "django-wsgi": floor_django_wsgi, "django-asgi": floor_django_asgi}


def main() -> None:
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in FLOORS:
        sys.exit(f"usage: python floor.py {{{'|'.join(FLOORS)}}} [SECONDS]")
    seconds = float(sys.argv[2]) if len(sys.argv) == 3 else 2.0
    rate = FLOORS[sys.argv[1]](seconds)
    print(f"{rate:.0f} {1e6 / rate:.2f}")


if __name__ == "__main__":
    main()
