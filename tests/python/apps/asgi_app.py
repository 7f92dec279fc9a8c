"""An ASGI 3 app with paths for the tests (one file, many behaviours)."""

import asyncio
import json
import os
import sys

state_file = os.environ.get("LIFESPAN_FILE")
fail_startup = os.environ.get("FAIL_STARTUP")

# What the app saw end (for tests that check it learned of a disconnect).
events: list[str] = []


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if fail_startup:
                await send({"type": "lifespan.startup.failed", "message": fail_startup})
                return
            if state_file:
                with open(state_file, "a") as f:
                    f.write(f"startup {os.getpid()}\n")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if state_file:
                with open(state_file, "a") as f:
                    f.write(f"shutdown {os.getpid()}\n")
            await send({"type": "lifespan.shutdown.complete"})
            return


def query(scope, name, default=None):
    for kv in scope["query_string"].decode().split("&"):
        k, _, v = kv.partition("=")
        if k == name:
            return v
    return default


async def text(send, body, status=200, headers=()):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        scope["state"]["greeting"] = "from lifespan"
        await lifespan(receive, send)
        return
    path = scope["path"]
    if path.startswith(scope["root_path"]):
        path = path[len(scope["root_path"]) :] or "/"
    if path == "/":
        await text(send, b"Hello, world!")
    elif path.startswith("/scope"):
        shown = {
            k: (v.decode() if isinstance(v, bytes) else v)
            for k, v in scope.items()
            if k not in ("headers", "state")
        }
        shown["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
        shown["state"] = dict(scope.get("state", {}))
        await text(
            send, json.dumps(shown).encode(), headers=[(b"content-type", b"application/json")]
        )
    elif path == "/echo":
        body = b""
        chunks = 0
        while True:
            m = await receive()
            body += m.get("body", b"")
            chunks += 1
            if not m.get("more_body"):
                break
        await text(send, body, headers=[(b"x-chunks", str(chunks).encode())])
    elif path == "/stream-echo":
        # Echo as it arrives: a body larger than any buffer, with bounded memory.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        total = 0
        while True:
            m = await receive()
            total += len(m.get("body", b""))
            if not m.get("more_body"):
                break
        await send({"type": "http.response.body", "body": str(total).encode()})
    elif path == "/big":
        n = int(query(scope, "n"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(n).encode())],
            }
        )
        chunk = b"x" * 65536
        while n > 0:
            take = min(n, len(chunk))
            n -= take
            await send({"type": "http.response.body", "body": chunk[:take], "more_body": n > 0})
    elif path == "/raise-before":
        raise RuntimeError("failed before the response on purpose")
    elif path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        # Let the server write the head out, so the response has started.
        await asyncio.sleep(0.3)
        raise RuntimeError("failed after the response started on purpose")
    elif path == "/no-response":
        return
    elif path == "/send-after-end":
        await text(send, b"done")
        try:
            await send({"type": "http.response.body", "body": b"more"})
        except RuntimeError as e:
            print(f"send after end raised: {e}", file=sys.stderr, flush=True)
    elif path == "/wait-disconnect":
        print(
            f"waiting for disconnect {scope['query_string'].decode()}", file=sys.stderr, flush=True
        )
        m = await receive()
        while m["type"] != "http.disconnect":
            m = await receive()
        print(f"got http.disconnect {scope['query_string'].decode()}", file=sys.stderr, flush=True)
    elif path == "/sleep":
        ms = int(query(scope, "ms"))
        print(f"sleeping {scope['query_string'].decode()}", file=sys.stderr, flush=True)
        await asyncio.sleep(ms / 1000)
        await text(send, b"slept")
    elif path == "/pid":
        await text(send, str(os.getpid()).encode())
    elif path == "/print":
        n = int(query(scope, "n"))
        sys.stdout.write("." * n + "\n")
        sys.stdout.flush()
        await text(send, b"printed")
    elif path == "/crash":
        os._exit(1)
    elif path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"body"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
    elif path == "/early-hints":
        await send(
            {
                "type": "http.response.start",
                "status": 103,
                "headers": [(b"link", b"</a.css>; rel=preload")],
            }
        )
        await text(send, b"final")
    else:
        await text(send, b"not found", status=404)
