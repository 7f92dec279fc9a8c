"""Finding the application named ``module:attribute``, and what it speaks."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any


class AppLoadError(Exception):
    """The application cannot be imported or is not where it was said to be."""


def split(app: str) -> tuple[str, str]:
    """``"mysite.wsgi:application"`` as its module and attribute path."""
    module, sep, attr = app.partition(":")
    if not sep or not module or not attr:
        raise AppLoadError(
            f"{app!r}: the application must be given as module:attribute, "
            "for example mysite.wsgi:application"
        )
    return module, attr


def find(app: str) -> None:
    """Checks, without importing it, that the module of ``app`` exists."""
    module, _ = split(app)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:
        raise AppLoadError(f"cannot find module {module!r}: {e}") from e
    if spec is None:
        raise AppLoadError(f"no module named {module!r} (is --chdir or PYTHONPATH right?)")


def load(app: str) -> Any:
    """Imports ``module`` and returns ``module.attribute`` (dots allowed)."""
    module, attr = split(app)
    try:
        obj: Any = importlib.import_module(module)
    except Exception as e:
        raise AppLoadError(f"importing {module!r}: {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise AppLoadError(f"module {module!r} has no attribute {attr!r}") from e
    return obj


def interface(app: Any) -> str:
    """What ``app`` speaks: ``asgi`` (ASGI 3), ``asgi2`` or ``wsgi``.

    An ASGI 3 application is a coroutine function (or an object whose
    ``__call__`` is one) of (scope, receive, send); an ASGI 2 one takes the
    scope and returns such a coroutine function; anything else callable is
    WSGI (environ, start_response).
    """
    if inspect.isclass(app):
        # An ASGI 2 class: instantiated with the scope, then awaited.
        return "asgi2" if inspect.iscoroutinefunction(vars(app).get("__call__")) else "wsgi"
    if inspect.iscoroutinefunction(app):
        return "asgi"
    # An object whose __call__ is a coroutine function (Django's ASGIHandler).
    if inspect.iscoroutinefunction(type(app).__call__):
        return "asgi"
    return "wsgi"
