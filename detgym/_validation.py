"""Small argument checks shared across detgym: one wording for "not one of the accepted values" and for "not an
integer >= n", in Python calls (ValueError) and on the command line (argparse types)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Collection, TypeVar

__all__ = ["check_choice", "check_int", "int_option", "replace_fields"]

T = TypeVar("T")


def check_choice(name: str, value: Any, accepted: Collection[str]) -> str:
    """Return ``value`` when it is one of ``accepted``, else raise ValueError.

    The message reads ``"{name} must be one of 'a', 'b'; got 'x'"``, so ``name`` should say where the value
    came from (``"family"``, ``"TrainConfig.optimizer"``, ``"--device"``).
    """
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    """Return ``value`` when it is an integer >= ``minimum`` (bools are refused), else raise ValueError
    ``"{name} must be an integer >= {minimum}, got {value!r}"``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def int_option(minimum: int = 0) -> Callable[[str], int]:
    """An argparse ``type`` for integer options >= ``minimum`` (argparse names the option in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse's "invalid <name> value" fallback
    return parse


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
