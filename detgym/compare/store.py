"""``OUT/runs.jsonl``: the finished runs of a comparison, one JSON line each, appended atomically.

Only the parent process writes. Each record is appended with one ``os.write`` of the whole line on an
``O_APPEND`` descriptor, then ``fsync``: a line is on disk whole before the run counts as finished, and a process
killed mid-write leaves at most one truncated last line. Reading skips (and reports) any line that is not a
whole JSON record; before appending, a file whose last line lacks its newline gets one, so the damaged fragment
stays on a line of its own and never swallows the next record. An exclusive ``flock`` on ``OUT/.runs.lock`` keeps
two comparisons from writing the same file at once.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detgym.data.io import file_lock

__all__ = ["RUNS_FILE", "ReadResult", "RunFile", "check_writable", "read_runs"]

RUNS_FILE = "runs.jsonl"


@dataclass
class ReadResult:
    """The readable records of a runs file (first occurrence of each key) and what was skipped."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: One line per skipped line (``"PATH:LINE: why"``).
    problems: list[str] = field(default_factory=list)


def read_runs(path: str | os.PathLike) -> ReadResult:
    """Read a runs file (a missing file has no runs); damaged lines and repeated keys are reported, not fatal."""
    result = ReadResult()
    path = Path(path)
    if not path.exists():
        return result
    data = path.read_bytes()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        # the text after the final newline; a whole record there only lost its newline (kept: RunFile adds it)
        last_unterminated = number == len(lines)
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                raise ValueError("not a run record")
        except ValueError:
            why = "truncated mid-write" if last_unterminated else "not a run record"
            result.problems.append(f"{path}:{number}: damaged line ({why}, {len(raw)} bytes): skipped")
            continue
        if record["key"] in result.records:
            result.problems.append(f"{path}:{number}: run {record['key']} repeated: the first one is kept")
            continue
        result.records[record["key"]] = record
    return result


def check_writable(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and prove it writable by creating a file in it; one-line ValueError if not."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {directory} is not a writable directory: {err.strerror or err}") from None
    return directory


class RunFile:
    """The append side of ``DIR/runs.jsonl`` (a context manager holding the directory's lock).

    Raises:
        ValueError (on entering): another process holds the lock.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RUNS_FILE
        self._fd: int | None = None
        self._lock: contextlib.ExitStack | None = None
        self._line_ended = False

    def __enter__(self) -> "RunFile":
        lock = contextlib.ExitStack()
        try:
            lock.enter_context(file_lock(self.directory / ".runs.lock", blocking=False))
        except BlockingIOError:
            raise ValueError(f"another detgym compare is writing {self.path}: wait for it, or use another --out") \
                from None
        self._lock = lock
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._line_ended = False
        return self

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def _write(self, data: bytes) -> None:
        assert self._fd is not None, "RunFile is not open"
        written = os.write(self._fd, data)
        if written != len(data):  # a regular file writes all or fails, short of a full disk
            raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes): disk full?")
        os.fsync(self._fd)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line (one write, then fsync); the first append ends a damaged last line."""
        if not self._line_ended:
            # checked here, not on opening, so that read_runs() still sees (and reports) the truncated line
            if os.fstat(self._fd).st_size and not self._ends_with_newline():
                self._write(b"\n")
            self._line_ended = True
        self._write(json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if self._lock is not None:
            self._lock.close()
        self._fd = self._lock = None
