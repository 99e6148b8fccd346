"""Choice between the numba kernels and the pure NumPy / Python fallback.

numba is a declared dependency (the per-image AP reward is a hot path), but every kernel in
``detgym.metrics`` also runs without it: ``njit`` below returns the plain Python function when numba
cannot be imported, and ``image_ap`` has a vectorised NumPy fallback. Setting the environment variable
``DETGYM_NO_NUMBA=1`` forces the fallbacks (read at call time, so tests can flip it).
"""

from __future__ import annotations

import os
from typing import Any, Callable

try:  # pragma: no cover - exercised implicitly by the import
    import numba as _numba
except Exception:  # numba missing or broken (e.g. an incompatible NumPy): fall back to pure Python
    _numba = None

NUMBA_AVAILABLE: bool = _numba is not None


def njit(func: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit(cache=True)`` when numba is importable, else the function itself.

    The kernels are written in the subset of Python that numba and CPython run identically, so the
    uncompiled function (``dispatcher.py_func``) is an exact, slow fallback.
    """
    if _numba is None:
        return func
    return _numba.njit(cache=True, nogil=True)(func)


def use_numba() -> bool:
    """True when the compiled kernels should run: numba importable and ``DETGYM_NO_NUMBA`` unset or 0."""
    if _numba is None:
        return False
    return os.environ.get("DETGYM_NO_NUMBA", "0").strip().lower() in ("", "0", "false", "no")


def kernel(func: Callable[..., Any]) -> Callable[..., Any]:
    """The compiled kernel, or its Python original when ``use_numba()`` is false right now."""
    if use_numba():
        return func
    return getattr(func, "py_func", func)
