"""A WSGI app with paths for the tests (one file, many behaviours).

Paths that must tell the test something the response cannot (that close()
ran, what a read raised, how far a generator got) write it to the file
named by the `file` query parameter.
"""

import hashlib
import io
import itertools
import json
import logging
import os
import sys
import time
from urllib.parse import parse_qs

CHUNK = b"x" * 65536


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}


def respond(start_response, body, status="200 OK", content_type="text/plain"):
    start_response(status, [("Content-Type", content_type)])
    return [body]


def record(environ, text):
    with open(query(environ)["file"], "a") as f:
        f.write(text)


def shown(environ):
    """The environ as JSON: values that are not JSON, as their type's name
    (and for wsgi.errors, whether it is the process's stderr)."""
    out = {}
    for k, v in environ.items():
        if isinstance(v, (str, int, bool, float)) or v is None:
            out[k] = v
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = type(v).__name__
    out["wsgi.errors"] = "stderr" if environ["wsgi.errors"] is sys.stderr else "other"
    return json.dumps(out).encode()


def read_body(environ, how):
    """Reads wsgi.input `how`: read, read-n, readline, lines (iteration) or
    readlines. Returns the bytes and what the reads returned, in pieces."""
    stream = environ["wsgi.input"]
    pieces = []
    if how == "read":
        pieces.append(stream.read())
        assert stream.read() == b""
    elif how == "read-n":
        while piece := stream.read(1000):
            pieces.append(piece)
    elif how == "readline":
        while line := stream.readline(100):
            pieces.append(line)
    elif how == "lines":
        pieces = list(stream)
    elif how == "readlines":
        pieces = stream.readlines()
    return b"".join(pieces), pieces


def wait_for_file(environ, suffix=""):
    """Waits for the test to create `file` + `suffix` (it has read what was
    sent)."""
    name = query(environ)["file"] + suffix
    deadline = time.monotonic() + 20
    while not os.path.exists(name) and time.monotonic() < deadline:
        time.sleep(0.01)


class Closing:
    """An iterable that records its close()."""

    def __init__(self, environ, chunks, fail=False):
        self.environ = environ
        self.chunks = chunks
        self.fail = fail

    def __iter__(self):
        yield from self.chunks
        if self.fail:
            raise RuntimeError("the iterable failed on purpose")

    def close(self):
        record(self.environ, "closed")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = query(environ)
    if path == "/":
        return respond(start_response, b"Hello, world!")
    if path.startswith("/environ"):
        return respond(start_response, shown(environ), content_type="application/json")
    if path == "/sleep":
        if "file" in q:
            record(environ, "sleeping")
        time.sleep(float(q["s"]))
        return respond(start_response, b"slept")
    if path == "/read":
        body, pieces = read_body(environ, q["how"])
        result = {
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "pieces": len(pieces),
            "first": pieces[0].decode("latin-1") if pieces else "",
            "content_length": environ.get("CONTENT_LENGTH"),
        }
        return respond(start_response, json.dumps(result).encode())
    if path == "/upload":
        # Reads in 64 KiB pieces, taking its time; records that it has read
        # the first MiB (a test holds the rest back until then).
        stream = environ["wsgi.input"]
        digest = hashlib.sha256()
        length = 0
        while piece := stream.read(65536):
            digest.update(piece)
            if "file" in q and length < 1 << 20 <= length + len(piece):
                record(environ, "first MiB read")
            length += len(piece)
            time.sleep(0.001)
        return respond(start_response, f"{length} {digest.hexdigest()}".encode())
    if path == "/stream":
        # Yields 64 KiB chunks up to `n` bytes; writes how many bytes it has
        # produced to `file` every MiB.
        n = int(q["n"])
        fd = os.open(q["file"], os.O_WRONLY | os.O_CREAT)

        def chunks():
            try:
                for produced in range(0, n, len(CHUNK)):
                    if produced % (1 << 20) == 0:
                        os.pwrite(fd, f"{produced:020d}".encode(), 0)
                    yield CHUNK
            finally:
                os.close(fd)

        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return chunks()
    if path == "/big":
        return respond(start_response, b"b" * int(q["n"]))
    if path == "/write":
        # Each write() goes out at once: the test reads it before it lets
        # the app go on.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"")
        wait_for_file(environ, ".1")
        write(b"written, ")
        wait_for_file(environ, ".2")
        write(bytearray(b"then "))
        return [b"returned"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        data = bytes(range(256)) * (int(q["n"]) // 256)
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 1000)
    if path == "/content-length":
        # Says 5 bytes and yields more: the rest is dropped.
        start_response("200 OK", [("Content-Length", "5")])
        return iter([b"abc", b"defgh", b"ijk"])
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        if q.get("how") == "stream":
            # Endless: only the client leaving ends it.
            return Closing(environ, itertools.repeat(CHUNK))
        return Closing(environ, [b"one ", b"two"], fail=q.get("how") == "fail")
    if path == "/exc-info-before":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed its mind")
        except ValueError:
            start_response("503 Service Unavailable", [("X-Why", "exc_info")], sys.exc_info())
        return [b"the app's own error page"]
    if path == "/exc-info-after":

        def after():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            wait_for_file(environ)
            try:
                raise KeyError("too late to change the response")
            except KeyError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"never sent"

        return after()
    if path == "/start-twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"never sent"]
    if path == "/raise-before":
        raise RuntimeError("failed before the response on purpose")
    if path == "/raise-after":

        def failing():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            wait_for_file(environ)
            raise RuntimeError("failed after the response started on purpose")

        return failing()
    if path == "/no-start":
        return []
    if path == "/disconnect":
        # Reads the body; the client leaves halfway.
        record(environ, "reading\n")
        try:
            environ["wsgi.input"].read()
        except Exception as e:
            record(environ, f"{type(e).__name__} OSError={isinstance(e, OSError)}")
            raise
        record(environ, "read it all")
        return respond(start_response, b"read")
    if path == "/print":
        print(f"printed by the app: {q['text']}")
        return respond(start_response, b"printed")
    if path == "/log":
        logging.getLogger("wsgi_app").warning("logged by the app: %s", q["text"])
        return respond(start_response, b"logged")
    return respond(start_response, b"not found", status="404 Not Found")
