"""ringway: serve a Django, ASGI or WSGI site from one Linux box.

The ``ringway`` command runs the Rust interface server, which holds the
connections and supervises worker processes that run the application; they
talk over a shared-memory channel layer. See ``ringway --help``.
"""

__version__ = "0.1.0"
