"""The on-disk cache every env family keeps its trained detectors and derived arrays in, and the per-process LRU.

An entry is a directory ``cache_root(cache_dir)/<family>/<kind>-<key>/`` holding plain arrays (``.npz``, read with
``allow_pickle=False``: a shared cache cannot run code) and a ``manifest.json`` (format version, kind, key, the
SHA-256 of every file, and whatever the builder records). ``key`` hashes everything the entry's content depends
on (:func:`detgym._hashing.stable_hash` of the resolved configuration), so a changed preset never reads stale
arrays. A reader checks the manifest and the checksums before using anything; an entry that fails a check is
moved aside and rebuilt, with a warning that names it. Builds are atomic (a temporary directory renamed into
place) and serialised by a file lock, so the workers of a vector env that need the same entry train it once.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Generic, Hashable, Mapping, TypeVar

import numpy as np

from detgym.data.io import atomic_directory, cache_root, file_lock

__all__ = ["LRU", "CacheError", "cache_entry", "load_entry", "load_state_arrays", "state_arrays", "write_arrays",
           "write_manifest"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CacheError(ValueError):
    """A cache entry that is missing, stale or corrupt (the loader rebuilds it)."""


class LRU(Generic[K, V]):
    """A per-process table of the ``capacity`` most recently used values (tables, detectors shared by the envs of
    one process)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, build: Callable[[], V]) -> V:
        """The value of ``key``, built by ``build()`` when absent (then the least recently used one may go)."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = build()
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


def cache_entry(family: str, kind: str, key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The directory of entry ``kind``-``key`` of ``family`` under ``cache_root(cache_dir)``."""
    return cache_root(cache_dir) / family / f"{kind}-{key}"


# ------------------------------------------------------------------------------------------------- writing
def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` as an ``.npz`` (inside an entry being built); returns its SHA-256."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_manifest(directory: Path, kind: str, key: str, version: int, files: Mapping[str, str],
                   **extra: Any) -> None:
    """The manifest of an entry being built: ``files`` maps file name -> SHA-256; ``extra`` is the builder's."""
    import detgym

    manifest = {"format": int(version), "kind": kind, "key": key, "detgym": detgym.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra, "files": dict(files)}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))


def state_arrays(model: Any) -> dict[str, np.ndarray]:
    """A detector's state dict as plain arrays (what an entry stores)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def load_state_arrays(model: Any, arrays: Mapping[str, np.ndarray], directory: Path) -> Any:
    """Load stored arrays into ``model``; a state of another architecture discards the entry (CacheError)."""
    import torch

    try:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    except RuntimeError as exc:
        _discard(directory)
        raise CacheError(f"cached detector {directory} does not fit the model ({exc}); removed, build it again") \
            from None
    return model


# ------------------------------------------------------------------------------------------------- reading
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_entry(directory: Path, kind: str, key: str, version: int
                ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Manifest and every listed ``.npz`` of an entry, all checked; :class:`CacheError` otherwise."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except FileNotFoundError:
        raise CacheError(f"{directory} has no manifest.json") from None
    except (OSError, ValueError) as exc:
        raise CacheError(f"{directory}/manifest.json is unreadable: {exc}") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != version or manifest.get("kind") != kind
            or manifest.get("key") != key or not isinstance(manifest.get("files"), dict)):
        raise CacheError(f"{directory}/manifest.json does not describe this {kind} (stale or foreign)")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name, digest in manifest["files"].items():
        path = directory / name
        try:
            if _sha256(path) != digest:
                raise CacheError(f"{path} does not match its checksum")
            with np.load(path, allow_pickle=False) as npz:
                arrays[name] = {k: npz[k] for k in npz.files}
        except CacheError:
            raise
        except (OSError, ValueError, EOFError) as exc:
            raise CacheError(f"{path} is unreadable: {exc}") from None
    return manifest, arrays


def _discard(directory: Path) -> None:
    """Move a bad entry out of the way (atomically) and delete it; a concurrent remover may win."""
    aside = directory.with_name(f".tmp-detgym-broken-{directory.name}-{os.getpid()}-{time.time_ns()}")
    try:
        os.rename(directory, aside)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return
    shutil.rmtree(aside, ignore_errors=True)


def load_entry(directory: Path, kind: str, key: str, version: int, build: Callable[[Path], None]
               ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The checked entry at ``directory``: read, else built by ``build(tmp_dir)`` under the lock (``build`` writes
    its files with :func:`write_arrays` and :func:`write_manifest`); a stale or damaged entry is discarded, with a
    warning naming it, and built again.

    Returns:
        ``(manifest, arrays)``: arrays by file name, then by array name.
    """
    try:
        return _read_entry(directory, kind, key, version)
    except CacheError as err:
        problem = err if directory.exists() else None
    with file_lock(directory.with_name(f".{directory.name}.lock")):
        try:  # another process may have built it while this one waited
            return _read_entry(directory, kind, key, version)
        except CacheError as err:
            if directory.exists():
                warnings.warn(f"detgym cache: {err}; rebuilding {directory}", stacklevel=3)
                _discard(directory)
            elif problem is not None:
                warnings.warn(f"detgym cache: {problem}; rebuilding {directory}", stacklevel=3)
        atomic_directory(directory, build)
        return _read_entry(directory, kind, key, version)
