"""Killing a running comparison (SIGINT, SIGKILL) and running it again loses no finished run and repeats none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detgym import cli
from detgym.compare.store import read_runs

AGENTS = "uniform,avw"
SEEDS = 3


def _argv(out: Path, workers: int) -> list[str]:
    return ["--env", "DetLossWeight-Test-v0", "--env-kwargs", '{"iterations": 8}', "--agents", AGENTS,
            "--seeds", str(SEEDS), "--workers", str(workers), "--out", str(out), "--no-progress", "--resamples", "200"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETGYM_CACHE", str(tmp_path_factory.mktemp("kill-cache")))
        yield


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _interruptible() -> None:
    """Ctrl-C as a terminal sends it: a launcher that ignores SIGINT (nohup, ``cmd &`` in a script, CI runners) passes
    SIG_IGN on to its children, and a process started that way is meant to ignore Ctrl-C, so the comparison keeps
    the disposition it inherits; the test starts it as a terminal's foreground job would be."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_kill_then_rerun_loses_and_repeats_nothing(cache, tmp_path, sig):
    out = tmp_path / "cmp"
    runs = out / "runs.jsonl"
    # its own session: the signal goes to the comparison (the parent) alone, and its workers can be found after
    proc = subprocess.Popen([sys.executable, "-m", "detgym", "compare", *_argv(out, workers=2)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_interruptible)
    try:
        deadline = time.monotonic() + 120
        while _lines(runs) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and b"run the same command again to resume" in err, err
        else:
            assert proc.returncode == -signal.SIGKILL
        # no worker outlives the comparison: terminated by the parent (SIGINT), or exiting by itself (SIGKILL)
        assert _group_gone(proc.pid, timeout=15)
    finally:
        if proc.poll() is None or not _group_gone(proc.pid, 0):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = runs.read_bytes()
    finished = read_runs(runs)
    assert not finished.problems and 2 <= len(finished.records) < 2 * SEEDS  # killed half-way
    assert cli.main(["compare", *_argv(out, workers=1)]) == 0
    after = read_runs(runs)
    assert not after.problems and len(after.records) == 2 * SEEDS  # every run once: nothing lost, nothing repeated
    assert runs.read_bytes().startswith(before)  # the finished runs' lines are untouched
    assert all(after.records[k] == r for k, r in finished.records.items())
