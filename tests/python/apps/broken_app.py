"""An app whose module fails to import."""

raise ImportError("this app is broken on purpose")
