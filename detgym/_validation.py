"""Small argument checks shared across detgym: one wording for "not one of the accepted values"."""

from __future__ import annotations

import dataclasses
from typing import Any, Collection, TypeVar

__all__ = ["check_choice", "replace_fields"]

T = TypeVar("T")


def check_choice(name: str, value: Any, accepted: Collection[str]) -> str:
    """Return ``value`` when it is one of ``accepted``, else raise ValueError.

    The message reads ``"{name} must be one of 'a', 'b'; got 'x'"``, so ``name`` should say where the value
    came from (``"family"``, ``"TrainConfig.optimizer"``, ``"--device"``).
    """
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
    return value


def replace_fields(obj: T, **changes: Any) -> T:
    """``dataclasses.replace(obj, **changes)``, refusing unknown field names.

    Raises:
        ValueError: a name in ``changes`` is not a field of ``obj``'s dataclass; the message names the
            unknown field(s) and lists the accepted ones. The dataclass's own ``__post_init__`` checks run
            on the copy as usual.
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"replace_fields needs a dataclass instance, got {type(obj).__name__}")
    names = [f.name for f in dataclasses.fields(obj) if f.init]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ValueError(f"unknown {type(obj).__name__} field(s) {unknown}; accepted: {', '.join(names)}")
    return dataclasses.replace(obj, **changes)
