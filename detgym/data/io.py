"""Atomic file and directory writes, and the dataset cache location.

Everything detgym.data writes goes through here so that a crash or a concurrent writer never leaves a
half-written file or cache directory behind: files are written to a temporary sibling and moved into
place with ``os.replace``; whole directory trees are built in a temporary sibling directory and renamed
into place with one ``os.rename``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io as _io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "atomic_write_bytes",
    "write_image",
    "read_image",
    "atomic_write_json",
    "atomic_write_csv",
    "atomic_savefig",
    "atomic_directory",
    "cache_root",
    "file_lock",
]

# Temporary siblings are named with this prefix so stale ones from crashed runs can be recognised.
TMP_PREFIX = ".tmp-detgym-"
# A temporary build directory older than this is certainly abandoned (a build takes seconds).
STALE_TMP_SECONDS = 3600.0


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Directory holding detgym's cached datasets.

    ``cache_dir`` if given, else ``$DETGYM_CACHE``, else ``~/.cache/detgym``. Not created here.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DETGYM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "detgym"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block: writers of one cache
    entry, table or run file serialise on it. ``blocking=False`` raises :class:`BlockingIOError` at once when
    another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)  # releases the lock


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` so that the file appears whole or not at all.

    The bytes go to a temporary file in the same directory (same file system, so the final
    ``os.replace`` is atomic), are flushed (and fsynced unless ``fsync=False``: the rename alone
    already protects against a crashed process; fsync adds protection against power loss), then
    renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = None, fsync: bool = True
) -> Path:
    """Serialise ``obj`` as JSON and write it atomically to ``path`` (see :func:`atomic_write_bytes`)."""
    text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_savefig(fig: Any, path: str | os.PathLike[str], *, dpi: int = 100, fsync: bool = False) -> Path:
    """Save a matplotlib figure as PNG to ``path`` atomically (see :func:`atomic_write_bytes`), then close it (also
    when saving fails: pyplot keeps every open figure alive, and scripts draw many)."""
    import matplotlib.pyplot as plt

    try:
        buffer = _io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        return atomic_write_bytes(path, buffer.getvalue(), fsync=fsync)
    finally:
        plt.close(fig)


def atomic_write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], *, fsync: bool = False) -> Path:
    """Write ``rows`` as CSV atomically; the columns are every key of the rows, in order of first appearance."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    text = _io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_bytes(path, text.getvalue().encode(), fsync=fsync)


def _cleanup_stale_tmp(parent: Path) -> None:
    """Remove temporary build directories abandoned by crashed processes (best effort)."""
    now = time.time()
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX):
            continue
        try:
            if now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
        except OSError:
            pass


def atomic_directory(target: str | os.PathLike[str], build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Create directory ``target`` atomically: ``build(tmp)`` fills a temporary sibling, which is renamed.

    If ``target`` already exists as a non-empty directory when the rename happens (another process won
    the race), the temporary tree is discarded and the existing one is used. An existing *empty*
    directory is replaced. Returns ``(target, built)``, ``built`` False when another writer's tree
    was kept.
    """
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _cleanup_stale_tmp(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-", dir=parent))
    try:
        # mkdtemp makes the directory private (0700); give the final tree the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            # Linux: ENOTEMPTY/EEXIST when target is a non-empty dir; ENOTDIR/EISDIR if a file is in the way.
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                return target, False
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, True


def write_image(path: str | os.PathLike[str], image: torch.Tensor | np.ndarray, *, fsync: bool = False) -> Path:
    """Write an RGB image (uint8 tensor [3, H, W] or array [H, W, 3]) atomically; format from the suffix.

    PNG is written with zlib level 1: the synthetic images are noisy, so higher levels cost time
    and barely shrink them. Unknown suffixes are rejected rather than guessed.
    """
    path = Path(path)
    if isinstance(image, torch.Tensor):
        arr = np.ascontiguousarray(image.detach().cpu().numpy().transpose(1, 2, 0))
    else:
        arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"write_image({path}): need uint8 RGB [3,H,W] tensor or [H,W,3] array, got {arr.dtype} {arr.shape}"
        )
    suffix = path.suffix.lower()
    buf = _io.BytesIO()
    pil = Image.fromarray(arr)
    if suffix == ".png":
        pil.save(buf, format="PNG", compress_level=1)
    elif suffix in (".jpg", ".jpeg"):
        pil.save(buf, format="JPEG", quality=95)
    elif suffix == ".bmp":
        pil.save(buf, format="BMP")
    else:
        raise ValueError(f"write_image({path}): unsupported image suffix {suffix!r}; accepted: .png, .jpg, .jpeg, .bmp")
    return atomic_write_bytes(path, buf.getvalue(), fsync=fsync)


def read_image(path: str | os.PathLike[str], *, context: str = "") -> torch.Tensor:
    """Read an image file as a uint8 RGB tensor [3, H, W] (grey / palette / alpha converted to RGB).

    EXIF orientation is not applied (annotation tools and pycocotools use the stored pixel grid).
    Raises FileNotFoundError naming the path (and ``context``, e.g. which annotation file refers to
    it) if it is missing, ValueError if it cannot be decoded.
    """
    path = Path(path)
    where = f" ({context})" if context else ""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}{where}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB") if im.mode != "RGB" else im
            arr = np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"cannot decode image file {path}{where}: {exc}") from exc
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
