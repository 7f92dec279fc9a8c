"""The raw ASGI hello app of `scripts/bench python`: the same file for every
server (ringway, granian, uvicorn), and what `floor.py asgi` drives with no
server at all.

Each request gets "Hello, world!" as text/plain (13 bytes; the server adds
its length). The messages are built per request, as an app builds them.
Lifespan is answered, so no server logs a missing one.
"""


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"Hello, world!"})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
