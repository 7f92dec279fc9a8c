"""The ASGI worker: many requests at once on one asyncio loop, woken through
the channel layer's doorbell.

The loop watches the worker's doorbell descriptor. When it rings, the worker
takes what its inbox holds (the scope of each new request arrives as a dict
built in native code) and hands each message to its request's `Cycle`. A
request's coroutine is driven eagerly: it runs at once, and becomes an
asyncio task only if it suspends, so a handler that answers without waiting
costs no scheduling.

`Cycle` is the one place the ASGI contract is enforced: `http.response.start`
once and first, body after it, nothing after the end; an exception before the
response started gives 500 (the server answers it) and a logged traceback,
after it the connection is closed; an app that returns without responding
gives 500 and a log line.

Flow control both ways: request body chunks are acknowledged ("body taken")
as soon as they arrive while less than `BODY_WINDOW` bytes wait for the app,
so more than one chunk is in flight; `send()` of response body waits for
credit when the response window (`--response-window`) is used up, so a slow
client slows the app instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from . import _native

log = logging.getLogger("ringway.error")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Request body bytes that may wait for the app before the worker stops
#: acknowledging chunks (more than one chunk in flight, and a bound).
BODY_WINDOW = 256 * 1024
#: Most inbox messages taken per look (the same batch size as the server's).
BATCH = 64
#: Looks at the inbox per doorbell ring before letting other callbacks run.
LOOKS = 4

_REQUEST = _native.REQUEST
_BODY = _native.BODY
_DISCONNECT = _native.DISCONNECT
_CREDIT = _native.CREDIT
_PER_MESSAGE = _native.CREDIT_PER_MESSAGE
#: `create_task(context=...)` exists (Python 3.11 and later).
_TASK_CONTEXT = sys.version_info >= (3, 11)
#: About how many body bytes one layer message carries (a bigger chunk goes
#: in several messages, each costing `_PER_MESSAGE`).
_PART = 60_000

_DISCONNECT_MESSAGE: Message = {"type": "http.disconnect"}


class ClientDisconnected(OSError):
    """`send()` on a request whose client has gone (ASGI spec 2.4: a
    subclass of `OSError`). Not logged as an application error."""


def asgi2(app: Callable[[Scope], Callable[[Receive, Send], Awaitable[None]]]) -> ASGIApp:
    """An ASGI 2 (double-callable) application as an ASGI 3 one."""

    async def app3(scope: Scope, receive: Receive, send: Send) -> None:
        instance = app(scope)
        await instance(receive, send)

    return app3


class _Continue:
    """Awaits a coroutine that was started by hand and suspended on `first`:
    asyncio's task machinery then drives the rest as if the task had run it
    from the start (the coroutine's own futures pass through unchanged)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, fut = self.coro, self.first
        while True:
            try:
                value = yield fut
            except BaseException as e:  # noqa: BLE001 - passed into the coroutine
                try:
                    fut = coro.throw(e)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    fut = coro.send(value)
                except StopIteration as done:
                    return done.value


class Cycle:
    """One request: its scope, the body as it arrives, the response as the
    app sends it."""

    __slots__ = (
        "server",
        "key",
        "scope",
        "body",
        "body_bytes",
        "more_body",
        "untaken",
        "receiving",
        "started",
        "pending_start",
        "trailers",
        "done",
        "disconnected",
        "sent",
        "consumed",
        "credit",
        "finished",
    )

    def __init__(self, server: Server, key: int, scope: Scope, body: bytes, more: bool) -> None:
        self.server = server
        self.key = key
        self.scope = scope
        # Body chunks not yet given to the app.
        self.body: deque[bytes] = deque((body,)) if body or not more else deque()
        self.body_bytes = len(body)
        self.more_body = more
        # A chunk arrived that the worker has not acknowledged yet.
        self.untaken = False
        self.receiving: asyncio.Future[None] | None = None
        self.started = False
        # `http.response.start`, held to ride with the first body chunk.
        self.pending_start: Message | None = None
        self.trailers = False
        self.done = False
        self.disconnected = False
        # Response units sent, and reported written by the reactor.
        self.sent = 0
        self.consumed = 0
        self.credit: asyncio.Future[None] | None = None
        self.finished = False
        if more:
            self.took_chunk()

    # ----- from the reactor ------------------------------------------------

    def took_chunk(self) -> None:
        """Acknowledges the chunk just received if the app's backlog allows;
        otherwise `receive()` does when the app catches up."""
        if self.body_bytes < BODY_WINDOW:
            self.server.worker.body_taken(self.key)
        else:
            self.untaken = True

    def on_body(self, body: bytes, more: bool) -> None:
        self.body.append(body)
        self.body_bytes += len(body)
        self.more_body = more
        if more:
            self.took_chunk()
        self._wake_receiver()

    def on_disconnect(self) -> None:
        self.disconnected = True
        self._wake_receiver()
        self._wake_sender()

    def on_credit(self, consumed: int) -> None:
        if consumed > self.consumed:
            self.consumed = consumed
            self._wake_sender()

    def _wake_receiver(self) -> None:
        w = self.receiving
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_sender(self) -> None:
        w = self.credit
        if w is not None and not w.done():
            w.set_result(None)

    # ----- the app's receive() and send() --------------------------------

    async def receive(self) -> Message:
        while True:
            if self.body:
                chunk = self.body.popleft()
                self.body_bytes -= len(chunk)
                more = bool(self.body) or self.more_body
                if self.untaken and self.body_bytes < BODY_WINDOW:
                    self.untaken = False
                    self.server.worker.body_taken(self.key)
                return {"type": "http.request", "body": chunk, "more_body": more}
            # The body is all taken: what comes next is the end of the request.
            if self.disconnected or self.done:
                return _DISCONNECT_MESSAGE
            if not self.more_body:
                # Waiting for the response to be sent, or the client to go.
                pass
            loop = self.server.loop
            self.receiving = loop.create_future()
            try:
                await self.receiving
            finally:
                self.receiving = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.done:
            raise RuntimeError(f"ASGI: {kind} after the response completed")
        if self.disconnected:
            # The client is gone: an app streaming a response must stop, not
            # go on producing into nothing (the spec's OSError).
            raise ClientDisconnected(f"the client of {self.scope.get('path')} has gone")
        w = self.server.worker
        if kind == "http.response.start":
            if self.started or self.pending_start is not None:
                raise RuntimeError("ASGI: http.response.start sent twice")
            status = message["status"]
            if 100 <= status < 200:
                # An informational response (103 Early Hints): goes at once.
                w.start(self.key, status, _headers(message.get("headers", ())))
                return
            self.pending_start = message
            self.trailers = bool(message.get("trailers", False))
        elif kind == "http.response.body":
            if self.pending_start is None and not self.started:
                raise RuntimeError("ASGI: http.response.body before http.response.start")
            body = message.get("body", b"")
            more = bool(message.get("more_body", False))
            # A body larger than half the window goes in pieces, each sent
            # when the window has room for it: the reactor never holds more
            # than the window of one response.
            piece = self.server.window // 2
            while True:
                chunk, body = body[:piece], body[piece:]
                last = not body
                if not await self.credit_for(len(chunk) + _PER_MESSAGE * (1 + len(chunk) // _PART)):
                    raise ClientDisconnected(f"the client of {self.scope.get('path')} has gone")
                start = self.pending_start
                if start is not None:
                    self.pending_start = None
                    self.started = True
                    self.sent += w.start(
                        self.key,
                        start["status"],
                        _headers(start.get("headers", ())),
                        self.trailers,
                        chunk,
                        more or not last,
                    )
                else:
                    self.sent += w.body(self.key, chunk, more or not last)
                if last:
                    break
            if not more and not self.trailers:
                self.complete()
        elif kind == "http.response.trailers":
            if not self.trailers or not self.started or self.pending_start is not None:
                raise RuntimeError(
                    "ASGI: http.response.trailers without trailers announced, or before the body ended"
                )
            more = bool(message.get("more_trailers", False))
            w.trailers(self.key, _headers(message.get("headers", ())), more)
            if not more:
                self.complete()
        elif kind == "http.response.pathsend":
            start = self.pending_start
            if start is None:
                raise RuntimeError("ASGI: http.response.pathsend without http.response.start")
            self.pending_start = None
            self.started = True
            w.start(self.key, start["status"], _headers(start.get("headers", ())))
            w.pathsend(self.key, str(message["path"]))
            self.complete()
        else:
            raise RuntimeError(f"ASGI: unknown message type {kind!r} for an HTTP request")

    async def credit_for(self, cost: int) -> bool:
        """Waits until the response window has room for `cost` units (or
        nothing is outstanding). False if the client went away meanwhile."""
        window = self.server.window
        while self.sent - self.consumed > 0 and self.sent - self.consumed + cost > window:
            if self.disconnected:
                return False
            self.credit = self.server.loop.create_future()
            try:
                await self.credit
            finally:
                self.credit = None
        return not self.disconnected

    def complete(self) -> None:
        self.done = True
        self._wake_receiver()
        self.server.forget(self)

    # ----- the app's end ---------------------------------------------------

    def finish(self, error: BaseException | None) -> None:
        """The app's coroutine ended (with `error` if it raised)."""
        self.finished = True
        w = self.server.worker
        if isinstance(error, ClientDisconnected) or (error is not None and self.disconnected):
            # The client left; the app stopped because of it.
            log.debug("client gone: %s %s", self.scope.get("method"), self.scope.get("path"))
        elif error is not None and not isinstance(error, asyncio.CancelledError):
            log.error(
                "Exception in ASGI application\n",
                exc_info=(type(error), error, error.__traceback__),
            )
            if not self.done and not self.disconnected:
                w.app_error(self.key, f"{type(error).__name__}: {error}")
        elif not self.done and not self.disconnected:
            if self.pending_start is not None or self.started:
                why = "the ASGI app returned before its response was complete"
            else:
                why = "the ASGI app returned without sending a response"
            log.error("%s: %s %s", why, self.scope.get("method"), self.scope.get("path"))
            w.app_error(self.key, why)
        self.done = True
        self.server.forget(self)


def _headers(headers: Any) -> list[tuple[bytes, bytes]]:
    return headers if isinstance(headers, list) else list(headers)


class Lifespan:
    """The lifespan protocol, once per worker."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.state: dict[str, Any] = {}
        self.events: asyncio.Queue[Message] = asyncio.Queue()
        self.started: asyncio.Future[str | None] = loop.create_future()
        self.stopped: asyncio.Future[str | None] = loop.create_future()
        self.supported = True
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.events.get, self.send)
        except BaseException as e:  # noqa: BLE001 - any failure means "no lifespan"
            if not self.started.done():
                # As uvicorn (auto): an app that rejects the lifespan scope
                # (Django raises ValueError) is served without it.
                self.supported = False
                log.info("ASGI 'lifespan' not supported by the app (%s: %s)", type(e).__name__, e)
                self.started.set_result(None)
            elif not self.stopped.done():
                self.stopped.set_result(f"{type(e).__name__}: {e}")
                log.error("Exception in ASGI lifespan", exc_info=e)
        finally:
            for f in (self.started, self.stopped):
                if not f.done():
                    f.set_result(None)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self.started.set_result(message.get("message", "") or "lifespan startup failed")
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self.stopped.set_result(message.get("message", "") or "lifespan shutdown failed")

    async def startup(self) -> str | None:
        """Runs startup; returns why it failed, if it did."""
        self.task = self.loop.create_task(self.run())
        await self.events.put({"type": "lifespan.startup"})
        return await self.started

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.events.put({"type": "lifespan.shutdown"})
        why = await self.stopped
        if why:
            log.error("lifespan shutdown failed: %s", why)


class Server:
    """Takes the worker's messages and runs the app on them."""

    def __init__(
        self,
        app: ASGIApp,
        worker: _native.Worker,
        loop: asyncio.AbstractEventLoop,
        window: int,
        max_requests: int,
        recycle: Callable[[str], None],
    ) -> None:
        self.app = app
        self.worker = worker
        self.loop = loop
        self.window = window
        self.max_requests = max_requests
        self.recycle = recycle
        self.requests = 0
        self.cycles: dict[int, Cycle] = {}
        self.state: dict[str, Any] | None = None
        self.scheduled = False

    def forget(self, cycle: Cycle) -> None:
        if cycle.finished and (cycle.done or cycle.disconnected):
            self.cycles.pop(cycle.key, None)

    def on_doorbell(self) -> None:
        self.worker.drain_bell()
        self.pump()

    def pump(self) -> None:
        """Takes what the inbox holds, hands it out, sends what waits; arms
        the doorbell once the inbox is empty."""
        self.scheduled = False
        worker = self.worker
        for _ in range(LOOKS):
            events = worker.receive(BATCH)
            for ev in events:
                self.dispatch(ev)
            worker.flush()
            if not events and not worker.arm():
                return
        # Busy: let other callbacks run, then look again.
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.pump)

    def dispatch(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == _REQUEST:
            _, key, scope, body, more = ev
            if self.state is not None:
                scope["state"] = self.state.copy()
            cycle = Cycle(self, key, scope, body, more)
            self.cycles[key] = cycle
            self.requests += 1
            if self.requests == self.max_requests:
                self.recycle(f"--max-requests: {self.requests} served")
            self.start(cycle)
            return
        known = self.cycles.get(ev[1])
        if known is None:
            return  # an ended request's late message
        if kind == _BODY:
            known.on_body(ev[2], ev[3])
        elif kind == _CREDIT:
            known.on_credit(ev[2])
        elif kind == _DISCONNECT:
            known.on_disconnect()
            self.forget(known)

    def start(self, cycle: Cycle) -> None:
        """Runs the app on `cycle` at once; only if it suspends does it
        become a task. Each request runs in a context of its own, as it
        would in a task of its own: context variables a request sets (and
        resets) are its alone."""
        ctx = contextvars.copy_context()
        try:
            coro: Any = ctx.run(self.app, cycle.scope, cycle.receive, cycle.send)
            fut = ctx.run(coro.send, None)
        except StopIteration:
            cycle.finish(None)
            return
        except BaseException as e:  # noqa: BLE001 - reported as the ASGI contract says
            cycle.finish(e)
            return
        resume = self.resume(coro, fut, cycle)
        if _TASK_CONTEXT:
            # The task goes on in the same context (a token made in the first
            # step can be reset later).
            self.loop.create_task(resume, context=ctx)
        else:
            # Python 3.10: the task runs in a copy of it.
            ctx.run(self.loop.create_task, resume)

    async def resume(self, coro: Any, fut: Any, cycle: Cycle) -> None:
        try:
            await _Continue(coro, fut)
        except BaseException as e:  # noqa: BLE001
            cycle.finish(e)
        else:
            cycle.finish(None)
        # The coroutine's sends may have queued replies: out they go.
        self.worker.flush()


async def serve(
    app: ASGIApp, worker: _native.Worker, status: Any, window: int, max_requests: int
) -> int:
    loop = asyncio.get_running_loop()
    lifespan = Lifespan(app, loop)
    why = await lifespan.startup()
    if why is not None:
        print(f"ringway worker: lifespan startup failed: {why}", file=sys.stderr, flush=True)
        status.send("error", f"lifespan startup failed: {why}")
        return _native.EXIT_APP_LOAD
    server = Server(app, worker, loop, window, max_requests, status.recycle)
    if lifespan.supported:
        server.state = lifespan.state
    stop: asyncio.Future[None] = loop.create_future()

    def on_term() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_reader(worker.fileno(), server.on_doorbell)
    status.ready()
    server.pump()
    await stop
    loop.remove_reader(worker.fileno())
    await lifespan.shutdown()
    return 0


def run(
    app: ASGIApp,
    worker: _native.Worker,
    status: Any,
    window: int,
    max_requests: int,
    loop: str = "auto",
) -> int:
    """Serves `app` until SIGTERM; returns the exit code."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop

            code: int = uvloop.run(serve(app, worker, status, window, max_requests))
            return code
        except ImportError:
            if loop == "uvloop":
                raise
    return asyncio.run(serve(app, worker, status, window, max_requests))
