"""Which optional parts of the install are present.

A gateway installs only the `edge` extra, so the command line and the benchmark registry offer
what is importable without importing it (importing would pull in the server libraries).
"""

from __future__ import annotations

import importlib.util


def module_available(name: str) -> bool:
    """True when `name` can be imported (its parent packages included) without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
