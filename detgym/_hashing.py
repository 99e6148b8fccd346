"""Plain data and stable hashes: what configurations, run records and cache keys are made of.

* :func:`jsonable`: a JSON-able copy of a value (mappings to dicts with sorted string keys, tuples and arrays to
  lists, NumPy scalars to Python numbers): how a resolved configuration or a recorded action is written down.
* :func:`stable_hash`: a short SHA-256 of data's canonical JSON (sorted keys): equal for equal data in every
  process and on every machine (unlike ``hash()``), so caches and results files can be keyed by it. Its text
  must never change: the keys of existing caches and ``runs.jsonl`` files are made with it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np

__all__ = ["jsonable", "stable_hash"]


def jsonable(value: Any) -> Any:
    """A JSON-able copy of ``value``: mappings become dicts (string keys, sorted), lists, tuples and arrays become
    lists, NumPy scalars and 0-d arrays Python numbers; anything else is returned as it is."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def stable_hash(data: Any, n: int = 16) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``data`` as JSON with sorted keys (values JSON cannot hold are
    written with ``str``)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]
