"""One lazy TensorBoard writer for the trainer, the pipeline, the envs and the agents.

:class:`TensorBoardLogger` does nothing when its ``log_dir`` is ``None`` and opens
``torch.utils.tensorboard.SummaryWriter`` only on the first value it logs, so that an object holding one
(an env, an agent) can be built, copied and pickled (e.g. sent to a vector-env worker) before anything is
written: the open writer is never part of the pickled state, a copy opens its own on first use.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger:
    """Scalars to TensorBoard under ``log_dir``; a no-op when ``log_dir`` is ``None``.

    Args:
        log_dir: the event-file directory (created on first use), or ``None`` to log nothing.
        filename_suffix: appended to the event file's name (two loggers may share one directory).

    Logging after :meth:`close` opens a new event file in the same directory; :meth:`close` may be called
    any number of times.
    """

    def __init__(self, log_dir: str | os.PathLike[str] | None, *, filename_suffix: str = "") -> None:
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.filename_suffix = filename_suffix
        self._writer: Any = None

    @property
    def enabled(self) -> bool:
        """Whether anything is written (``log_dir`` was given)."""
        return self.log_dir is not None

    def _get_writer(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir, filename_suffix=self.filename_suffix)
        return self._writer

    def scalar(self, tag: str, value: Any, step: int) -> None:
        """Log one scalar (a Python / numpy number or a one-element tensor) at ``step``."""
        if self.log_dir is None:
            return
        self._get_writer().add_scalar(tag, float(value), int(step))

    def scalars(self, prefix: str, mapping: Mapping[str, Any], step: int, *, sep: str = "/") -> None:
        """Log every ``key: value`` of ``mapping`` as the tag ``f"{prefix}{sep}{key}"`` (``key`` alone when
        ``prefix`` is empty)."""
        if self.log_dir is None:
            return
        for key, value in mapping.items():
            self.scalar(f"{prefix}{sep}{key}" if prefix else str(key), value, step)

    def flush(self) -> None:
        """Write pending events to disk (nothing to do before the first value or when disabled)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; safe to call twice, or without anything logged."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_writer"] = None  # an open file is not state: the copy opens its own on first use
        return state

    def __repr__(self) -> str:
        return f"TensorBoardLogger({self.log_dir!r})"
