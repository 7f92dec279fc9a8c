"""The WSGI worker (PEP 3333): requests run one per thread, as gunicorn's
sync (``--threads 1``) and gthread (``--threads N``) workers run them.

The worker's inbox brings each request's scope (an ASGI-shaped dict built in
native code), its body in chunks, credits and disconnects. `Server.pump`
takes them and hands each to its `Request`; a new request waits in a queue
for a thread. With one thread the main thread runs the requests itself, so a
request costs no thread hop: when the app waits for body or for credit, the
same thread pumps the inbox until what it waits for arrives. With N threads
the main thread only pumps, and N threads take requests from the queue and
wait on a condition for their messages.

`Request` is the one place the WSGI contract is enforced: the environ,
``start_response`` and its ``exc_info`` rules, ``write()``, the iterable
sent as it is produced and its ``close()`` always called. An exception
before the response started gives 500 (the server answers it) and a logged
traceback; after it started the connection is closed; an app that returns
without calling ``start_response`` gives 500 and a log line.

Flow control both ways, as in the ASGI worker: request body chunks are
acknowledged ("body taken") as they arrive while less than `BODY_WINDOW`
bytes wait unread, so more than one chunk is in flight; response body waits
for credit when the response window (``--response-window``) is used up, so
a slow client slows the app instead of filling memory.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import FrameType, TracebackType
from typing import IO, Any, Protocol
from urllib.parse import unquote_to_bytes

from . import __version__, _native

log = logging.getLogger("ringway.error")

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Write = Callable[[bytes], None]
StartResponse = Callable[..., Write]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Request body bytes that may wait for the app before the worker stops
#: acknowledging chunks (more than one chunk in flight, and a bound).
BODY_WINDOW = 256 * 1024
#: About how many body bytes one layer message carries (the native module
#: sends a longer body in several messages, each costing `_PER_MESSAGE`).
_PART = 60_000
#: Most inbox messages taken per look (the same batch size as the server's).
BATCH = 64
#: Distinct header names whose environ keys are remembered (a client
#: inventing names must not grow the cache without bound).
KEY_CACHE = 512

_REQUEST = _native.REQUEST
_BODY = _native.BODY
_DISCONNECT = _native.DISCONNECT
_CREDIT = _native.CREDIT
_PER_MESSAGE = _native.CREDIT_PER_MESSAGE


class ClientDisconnected(OSError):
    """The request ended before the app was done with it: the client went
    away (or the server gave up on it). Raised by ``wsgi.input`` reads and by
    ``write()``; an ``OSError``, as gunicorn's ``NoMoreData`` is, so
    frameworks treat it as an unreadable request."""


class ProtocolError(Exception):
    """The app broke the WSGI contract in a way its traceback would not
    explain (the message says what happened)."""


class _Stop(BaseException):
    """SIGTERM: stop serving, wherever the main thread is."""


class Status(Protocol):
    """The worker's end of the status pipe (`ringway.worker.Status`)."""

    def ready(self) -> None: ...

    def recycle(self, why: str) -> None: ...


class FileWrapper:
    """``wsgi.file_wrapper``: a file-like object as an iterable of blocks.
    Its ``close()`` closes the file."""

    def __init__(self, filelike: IO[bytes], blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return self.blocks(self.blksize)

    def blocks(self, size: int) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(size):
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class Input:
    """``wsgi.input``: the request body, read as its chunks arrive. A read
    that needs a chunk not there yet blocks until it comes; the end of the
    body reads as b""; a request that ended first raises
    `ClientDisconnected`."""

    __slots__ = ("_buf", "_pos", "_request")

    def __init__(self, request: Request) -> None:
        self._request = request
        # The chunk being read, and how far.
        self._buf = b""
        self._pos = 0

    def _fill(self) -> bool:
        """Moves to the next chunk (the current one is all read). False at
        the end of the body."""
        self._buf = self._request.next_chunk()
        self._pos = 0
        return bool(self._buf)

    def read(self, size: int | None = -1) -> bytes:
        buf, pos = self._buf, self._pos
        if size is None or size < 0:
            parts = [buf[pos:]]
            while self._fill():
                parts.append(self._buf)
            self._pos = len(self._buf)
            return b"".join(parts)
        if size <= len(buf) - pos:
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = [buf[pos:]]
        need = size - (len(buf) - pos)
        self._pos = len(buf)
        while need and self._fill():
            chunk = self._buf
            self._pos = min(need, len(chunk))
            parts.append(chunk[: self._pos])
            need -= self._pos
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        limit = sys.maxsize if size is None or size < 0 else size
        if limit == 0:
            return b""
        parts: list[bytes] = []
        have = 0
        while True:
            buf, pos = self._buf, self._pos
            if pos < len(buf):
                stop = min(len(buf), pos + limit - have)
                nl = buf.find(b"\n", pos, stop)
                if nl >= 0:
                    stop = nl + 1
                parts.append(buf[pos:stop])
                have += stop - pos
                self._pos = stop
                if nl >= 0 or have >= limit:
                    break
            if not self._fill():
                break
        return b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class Request:
    """One request: its body as it arrives, the app's call, its response as
    the app produces it."""

    __slots__ = (
        "chunks",
        "cond",
        "consumed",
        "done",
        "gone",
        "headers",
        "key",
        "more_body",
        "remaining",
        "scope",
        "sent",
        "server",
        "started",
        "status",
        "unread",
        "untaken",
        "waiting",
        "worker",
    )

    def __init__(
        self, server: Server, key: int, scope: dict[str, Any], body: bytes, more: bool
    ) -> None:
        self.server = server
        self.worker = server.worker
        self.key = key
        self.scope = scope
        # Body chunks not yet read by the app, and their bytes.
        self.chunks: deque[bytes] = deque((body,)) if body else deque()
        self.unread = len(body)
        self.more_body = more
        # A chunk arrived that the worker has not acknowledged yet.
        self.untaken = False
        # The server said the request is over (the client left, a timeout).
        self.gone = False
        # The last response message (or the app's failure) was sent.
        self.done = False
        # From start_response: the status code, the headers, and what is
        # left of a content-length (None: no length given).
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.remaining: int | None = None
        # `http.response.start` was sent (the head is out).
        self.started = False
        # Response units sent, and reported written by the reactor.
        self.sent = 0
        self.consumed = 0
        # Threaded: the condition its thread waits on, and whether it does.
        self.cond: threading.Condition | None = None
        self.waiting = False
        if more:
            self.took_chunk()

    # ----- from the reactor (the server's lock held) -----------------------

    def took_chunk(self) -> None:
        """Acknowledges the chunk just received if the app's backlog allows;
        otherwise `next_chunk` does when the app catches up."""
        if self.unread < BODY_WINDOW:
            self.worker.body_taken(self.key)
        else:
            self.untaken = True

    def on_body(self, body: bytes, more: bool) -> None:
        if body:
            self.chunks.append(body)
            self.unread += len(body)
        self.more_body = more
        if more:
            self.took_chunk()
        self.wake()

    def on_credit(self, consumed: int) -> None:
        if consumed > self.consumed:
            self.consumed = consumed
            self.wake()

    def on_disconnect(self) -> None:
        self.gone = True
        self.wake()

    def wake(self) -> None:
        if self.waiting and self.cond is not None:
            self.cond.notify()

    # ----- the body, for wsgi.input ----------------------------------------

    def next_chunk(self) -> bytes:
        """The next body chunk, waiting for it if need be; b"" at the end."""
        with self.server.lock:
            while not self.chunks:
                if not self.more_body:
                    return b""
                if self.gone or self.done:
                    raise ClientDisconnected("the request ended before its body was read")
                self.server.wait(self)
            chunk = self.chunks.popleft()
            self.unread -= len(chunk)
            if self.untaken and self.unread < BODY_WINDOW:
                self.untaken = False
                self.worker.body_taken(self.key)
                self.worker.flush()
            return chunk

    # ----- the app's start_response() and write() ------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Write:
        if exc_info is not None:
            try:
                if self.started:
                    # PEP 3333: too late to change the response; the error
                    # goes up through the app.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("WSGI: start_response() called a second time without exc_info")
        self.status = _status_code(status)
        self.headers, self.remaining = _encode_headers(headers)
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's ``write()``: sends `data` at once (the head with it)."""
        if self.status is None:
            raise AssertionError("WSGI: write() before start_response()")
        if type(data) is not bytes:
            data = _as_bytes(data, "write()")
        if data or not self.started:
            self.send(data, False)

    # ----- the response ------------------------------------------------------

    def send(self, data: bytes, last: bool) -> None:
        """Sends body bytes (the head with the first), `last` ending the
        response. Bytes beyond the content-length are dropped (as gunicorn
        drops them); reaching it ends the response."""
        if self.done:
            return
        remaining = self.remaining
        if remaining is not None:
            if len(data) >= remaining:
                data = data[:remaining]
                last = True
            self.remaining = remaining - len(data)
        # More than half the window goes in pieces, each sent when the
        # window has room for it: the reactor never holds more than the
        # window of one response.
        piece = self.server.window // 2
        if len(data) <= piece:
            self.send_piece(data, last)
        else:
            for at in range(0, len(data), piece):
                self.send_piece(data[at : at + piece], last and at + piece >= len(data))
        self.worker.flush()
        if last:
            self.done = True

    def send_piece(self, piece: bytes, last: bool) -> None:
        """Sends `piece` once the response window has room for it."""
        cost = len(piece) + _PER_MESSAGE * (1 + len(piece) // _PART)
        window = self.server.window
        with self.server.lock:
            while self.sent - self.consumed > 0 and self.sent - self.consumed + cost > window:
                if self.gone:
                    break
                self.server.wait(self)
            if self.gone:
                raise ClientDisconnected("the client went away")
        w = self.worker
        if self.started:
            self.sent += w.body(self.key, piece, not last)
        else:
            assert self.status is not None
            self.started = True
            self.sent += w.start(self.key, self.status, self.headers, False, piece, not last)

    def body(self, data: bytes, last: bool) -> None:
        """A chunk of the app's iterable (`last`: known to be its last)."""
        if type(data) is not bytes:
            data = _as_bytes(data, "the iterable")
        if self.status is None:
            raise ProtocolError(
                "the WSGI app's iterable yielded body before calling start_response()"
            )
        # PEP 3333: the head waits for the first non-empty chunk.
        if data or last:
            self.send(data, last)

    def respond(self, result: Iterable[bytes]) -> None:
        """Sends the app's iterable as it is produced; ends the response."""
        if isinstance(result, (list, tuple)):
            # Its length is known: said in the head, so the client needs
            # neither chunked framing nor a close to find the end.
            if self.status is not None and self.remaining is None and not self.started:
                self.remaining = sum(map(len, result))
                self.headers.append((b"content-length", str(self.remaining).encode()))
            end = len(result) - 1
            for i, data in enumerate(result):
                self.body(data, i == end)
        else:
            if isinstance(result, FileWrapper):
                result = result.blocks(max(result.blksize, self.server.window // 2))
            for data in result:
                self.body(data, False)
        if self.status is None:
            raise ProtocolError("the WSGI app returned without calling start_response()")
        if not self.done:
            self.send(b"", True)

    def run(self) -> None:
        """Calls the app and sends its response; always calls the iterable's
        ``close()``."""
        result: Iterable[bytes] | None = None
        try:
            result = self.server.app(self.server.environ(self), self.start_response)
            self.respond(result)
        except _Stop:
            raise
        except BaseException as e:  # noqa: BLE001 - reported as the WSGI contract says
            self.fail(e)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as e:  # noqa: BLE001 - reported as the app's failure
                    self.fail(e)
        self.done = True

    def fail(self, error: BaseException) -> None:
        """The app failed (or broke the contract): logged, and the server
        told (500 if nothing was sent yet; otherwise it closes the
        connection)."""
        method, path = self.scope.get("method"), self.scope.get("path")
        if self.gone and isinstance(error, ClientDisconnected):
            log.debug("client went away: %s %s", method, path)
            return
        if isinstance(error, ProtocolError):
            log.error("%s: %s %s", error, method, path)
        else:
            log.error(
                "Exception in WSGI application: %s %s\n",
                method,
                path,
                exc_info=(type(error), error, error.__traceback__),
            )
        if not self.done and not self.gone:
            self.done = True
            self.worker.app_error(self.key, f"{type(error).__name__}: {error}")
            self.worker.flush()


def _status_code(status: str) -> int:
    """The code of a WSGI status line (``"200 OK"``)."""
    if type(status) is not str or not status[:3].isdigit() or status[3:4] not in ("", " "):
        raise ValueError(f"WSGI: the status must be a str such as '200 OK', not {status!r}")
    return int(status[:3])


def _encode_headers(headers: list[tuple[str, str]]) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """The app's headers as bytes, and the content-length if it gave one."""
    out = []
    length = None
    for name, value in headers:
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"WSGI: header names and values must be str, not {name!r}: {value!r}")
        n = name.encode("latin-1")
        out.append((n, value.encode("latin-1")))
        if len(n) == 14 and n.lower() == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None  # the server rejects it
    return out, length


def _as_bytes(data: object, where: str) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise ProtocolError(
        f"the WSGI app gave {type(data).__name__} to {where}: body chunks must be bytes"
    )


def _wsgi_str(text: str) -> str:
    """PEP 3333's "bytes as str": the UTF-8 bytes of `text`, one char each."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


# Header names' environ keys ("" for a name that is dropped).
_KEYS: dict[bytes, str] = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}


def _environ_key(name: bytes) -> str:
    # A name with "_" is dropped, as gunicorn drops it: `X_Forwarded_For`
    # would otherwise arrive as HTTP_X_FORWARDED_FOR, posing as the header
    # a trusted proxy sets.
    key = "" if b"_" in name else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
    if len(_KEYS) < KEY_CACHE:
        _KEYS[name] = key
    return key


_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}


class Server:
    """Takes the worker's messages, hands them to their requests, and runs
    the requests on the main thread or on `threads` threads."""

    def __init__(
        self,
        app: WSGIApp,
        worker: _native.Worker,
        window: int,
        max_requests: int,
        recycle: Callable[[str], None],
        threads: int,
    ) -> None:
        self.app = app
        self.worker = worker
        self.window = window
        self.max_requests = max_requests
        self.recycle = recycle
        self.threads = threads
        self.count = 0
        # Guards every request's state (re-entrant: with one thread, a
        # request that waits pumps the inbox, which takes it again).
        self.lock = threading.RLock()
        self.requests: dict[int, Request] = {}
        # Requests waiting for a thread, and the threads' condition.
        self.queue: deque[Request] = deque()
        self.work = threading.Condition(self.lock)
        self.base: Environ = {
            "wsgi.version": (1, 0),
            "wsgi.multithread": threads > 1,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": f"ringway/{__version__}",
        }
        # The wait watches the doorbell and a pipe that a signal makes
        # readable (`signal.set_wakeup_fd`), so a SIGTERM that lands on
        # another thread, or just before the wait, still ends it.
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller = select.poll()
        self.poller.register(worker.fileno(), select.POLLIN)
        self.poller.register(self.wakeup_r, select.POLLIN)

    # ----- the inbox ---------------------------------------------------------

    def pump(self) -> None:
        """Takes what the inbox holds (waiting for something if it is
        empty), hands it out, and sends what waits."""
        w = self.worker
        events = w.receive(BATCH)
        if not events:
            # What was sent must be out (and its reactor woken) before
            # waiting for its answer.
            w.flush()
            if not w.arm():
                for fd, _ in self.poller.poll():
                    if fd == self.wakeup_r:
                        _drain(fd)
                w.drain_bell()
            events = w.receive(BATCH)
        with self.lock:
            for ev in events:
                self.dispatch(ev)
        # Acknowledgements, and what waited for room in a full inbox.
        w.flush()

    def dispatch(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == _REQUEST:
            _, key, scope, body, more = ev
            request = Request(self, key, scope, body, more)
            self.requests[key] = request
            self.queue.append(request)
            if self.threads > 1:
                self.work.notify()
            self.count += 1
            if self.count == self.max_requests:
                self.recycle(f"--max-requests: {self.count} served")
            return
        known = self.requests.get(ev[1])
        if known is None:
            return  # an ended request's late message
        if kind == _BODY:
            known.on_body(ev[2], ev[3])
        elif kind == _CREDIT:
            known.on_credit(ev[2])
        elif kind == _DISCONNECT:
            known.on_disconnect()
            del self.requests[known.key]

    def forget(self, request: Request) -> None:
        """The request is over: its late messages are dropped."""
        with self.lock:
            self.requests.pop(request.key, None)

    def wait(self, request: Request) -> None:
        """Blocks `request`'s thread (the lock held) until a message for it
        may have come."""
        if self.threads == 1:
            self.pump()
            return
        cond = request.cond
        assert cond is not None
        # What this thread sent must be out (and its reactor woken) before
        # it waits for the answer.
        self.worker.flush()
        request.waiting = True
        try:
            cond.wait()
        finally:
            request.waiting = False

    # ----- running requests --------------------------------------------------

    def environ(self, request: Request) -> Environ:
        """The WSGI environ of `request`, from its scope."""
        scope = request.scope
        env = self.base.copy()
        env["wsgi.input"] = Input(request)
        env["wsgi.errors"] = sys.stderr
        env["wsgi.url_scheme"] = scheme = scope["scheme"]
        env["REQUEST_METHOD"] = scope["method"]
        env["SERVER_PROTOCOL"] = _PROTOCOLS.get(scope["http_version"], "HTTP/1.1")
        root = scope["root_path"]
        env["SCRIPT_NAME"] = root if root.isascii() else _wsgi_str(root)
        # The path after root_path, percent-decoded, as bytes-as-str.
        raw = scope["raw_path"]
        env["PATH_INFO"] = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("latin-1")
        query = scope["query_string"]
        env["QUERY_STRING"] = query.decode("latin-1")
        env["RAW_URI"] = (raw + b"?" + query if query else raw).decode("latin-1")
        keys = _KEYS
        for name, value in scope["headers"]:
            key = keys.get(name)
            if key is None:
                key = _environ_key(name)
            if not key:
                continue
            text = value.decode("latin-1")
            before = env.get(key)
            if before is not None and key != "CONTENT_LENGTH":
                text = before + ("; " if key == "HTTP_COOKIE" else ", ") + text
            env[key] = text
        client = scope["client"]
        if client is not None:
            env["REMOTE_ADDR"] = client[0]
            env["REMOTE_PORT"] = str(client[1])
        else:
            env["REMOTE_ADDR"] = ""
        server = scope["server"]
        if server is not None:
            env["SERVER_NAME"] = server[0]
            env["SERVER_PORT"] = str(server[1])
        else:
            # A Unix socket: the Host header names the server, as gunicorn
            # has it.
            env["SERVER_NAME"], env["SERVER_PORT"] = _host_port(env.get("HTTP_HOST", ""), scheme)
        return env

    def serve(self) -> None:
        """Serves until SIGTERM (`_Stop`)."""
        if self.threads == 1:
            queue = self.queue
            while True:
                while queue:
                    self.run(queue.popleft())
                self.pump()
        for i in range(self.threads):
            threading.Thread(target=self.thread, name=f"ringway-wsgi-{i}", daemon=True).start()
        while True:
            self.pump()

    def thread(self) -> None:
        """A request thread: runs requests from the queue, one at a time."""
        cond = threading.Condition(self.lock)
        while True:
            with self.lock:
                while not self.queue:
                    self.work.wait()
                request = self.queue.popleft()
                request.cond = cond
            self.run(request)

    def run(self, request: Request) -> None:
        """Runs `request` unless it ended while it waited for a thread."""
        if request.gone:
            return
        try:
            request.run()
        except Exception:
            # Not the app's failure (`Request.run` reports those): telling
            # the server failed, most likely because it is going away.
            log.exception(
                "ringway: serving %s %s failed",
                request.scope.get("method"),
                request.scope.get("path"),
            )
        finally:
            self.forget(request)


def _host_port(host: str, scheme: str) -> tuple[str, str]:
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, "443" if scheme == "https" else "80"


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def run(
    app: WSGIApp,
    worker: _native.Worker,
    status: Status,
    window: int,
    max_requests: int,
    threads: int,
) -> int:
    """Serves `app` until SIGTERM; returns the exit code."""
    server = Server(app, worker, window, max_requests, status.recycle, max(1, threads))

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    signal.set_wakeup_fd(server.wakeup_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, stop)
    status.ready()
    try:
        server.serve()
    except _Stop:
        pass
    return 0
