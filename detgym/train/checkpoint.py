"""Checkpoint files: plain data (tensors and Python primitives), written atomically, read without running code.

A checkpoint is data, never code: :func:`load_plain` reads with ``torch.load(..., weights_only=True)``, whose
unpickler only rebuilds tensors, storages and Python's containers / numbers / strings, and refuses any other
class or function a crafted file names (``os.system`` in a ``__reduce__``, say) with :class:`UnsafeCheckpointError`.
Nothing is allow-listed: every checkpoint detgym writes (:meth:`Trainer.state_dict`, the pipeline's ``last.pt``
and ``best.pt``) holds tensors, dicts, lists, tuples, str, int, float, bool and None only, and
:func:`atomic_torch_save` checks that before writing (numpy scalars, the usual stowaway, are turned into Python
numbers; anything else is refused with the path to it).
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detgym.data.io import atomic_write_bytes

__all__ = ["UnsafeCheckpointError", "atomic_torch_save", "load_checkpoint_file", "load_plain", "plain_data"]

#: Leaf types that ``torch.load(weights_only=True)`` rebuilds without naming any other class (exact types: a
#: subclass such as an IntEnum or numpy's float64 pickles by its own class name).
_LEAVES = (str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


class UnsafeCheckpointError(ValueError):
    """A checkpoint file names a class or function besides tensors and Python primitives; it was not loaded."""


def plain_data(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with numpy scalars turned into Python numbers; TypeError naming the entry for anything not plain.

    Plain: tensors, str, int, float, bool, None (and torch dtypes / devices / sizes), and dicts (str / int keys;
    ``OrderedDict`` as in state dicts), lists and tuples of those. ``obj`` itself is returned when nothing needed
    converting (a state dict keeps its type and ``_metadata``).
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _LEAVES:
        return obj
    if isinstance(obj, np.generic) and type(obj.item()) in (str, int, float, bool):
        return obj.item()
    if type(obj) in (dict, OrderedDict):
        items = {}
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; checkpoints use str / int keys")
            items[k] = plain_data(v, f"{where}[{k!r}]")
        if all(items[k] is v for k, v in obj.items()):
            return obj
        if type(obj) is dict:
            return items
        out = OrderedDict(items)
        out.__dict__.update(obj.__dict__)  # a state dict's _metadata
        return out
    if type(obj) in (list, tuple):
        values = [plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return obj if all(a is b for a, b in zip(values, obj)) else type(obj)(values)
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint holds tensors and "
                    f"Python primitives only (convert it, e.g. an array to a tensor)")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` such that ``path`` holds either the old file or the whole new one, never half.

    ``obj`` must be plain data (see :func:`plain_data`), so that :func:`load_plain` can read it back.
    """
    buffer = io.BytesIO()
    torch.save(plain_data(obj), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_plain(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file names a class or function that is not plain data (refused, not run).
        ValueError: the file is not a torch checkpoint at all (corrupt, truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc.__context__ or exc).strip().splitlines()
        reason_text = " ".join(line.strip() for line in reason if line.strip())
        refused = re.search(r"GLOBAL ([\w.]+)", reason_text)
        if refused:
            raise UnsafeCheckpointError(
                f"checkpoint {path} is not a plain-data checkpoint: it names {refused.group(1)}, which is not a "
                f"tensor or Python primitive; it was not loaded (loading it could run arbitrary code). Only load "
                f"checkpoints written by detgym, or re-save this one as plain data from a trusted source"
            ) from None
        raise ValueError(f"checkpoint {path} could not be read: it is not a plain-data torch checkpoint "
                         f"({reason_text or type(exc).__name__})") from exc
    except Exception as exc:  # torch raises several types for corrupt files
        raise ValueError(f"checkpoint {path} could not be read ({exc})") from exc


def load_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_torch_save` (plain data only, see :func:`load_plain`).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file is not plain data (a crafted pickle); nothing in it was run.
        ValueError: the file is unreadable, or not a detgym checkpoint (no ``"model"`` entry).
    """
    state = load_plain(path, map_location=map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"checkpoint {Path(path)} is not a detgym checkpoint (no 'model' entry)")
    return state
