"""Public names imported on first use, for the packages whose faces need torch or OpenCV while
their commands must answer ``--help`` without them (PEP 562's module ``__getattr__``)."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, public: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports each name of ``public`` (name ->
    the module defining it) when first asked for."""

    def __getattr__(name: str) -> object:
        if name in public:
            return getattr(importlib.import_module(public[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
