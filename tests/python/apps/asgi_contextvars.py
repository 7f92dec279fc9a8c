"""An app that sets a context variable per request, resets it after an
await, and reports what it saw first: each request must start clean."""

import asyncio
import contextvars

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    seen = request_id.get()
    token = request_id.set(scope["path"])
    if scope["query_string"] == b"await":
        await asyncio.sleep(0.01)
    request_id.reset(token)
    body = f"saw {seen}; now {request_id.get()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
