"""benchmarks.device_check: exits 0 with a message without CUDA; its timing function runs any registered env."""

from __future__ import annotations

import pytest
import torch

from benchmarks import device_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path only runs without a GPU")
def test_without_cuda_says_so_and_exits_0(capsys):
    assert device_check.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_time_episode_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("DETGYM_CACHE", str(tmp_path))
    row = device_check.time_episode("DetLossWeight-Test-v0", "cpu", max_steps=3)
    assert row["steps"] == 3 and row["step_s"] > 0 and row["reset_s"] > 0 and row["device"] == "cpu"
