"""detgym.tensorboard.TensorBoardLogger: lazy, no-op without a directory, closable twice, picklable."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from detgym.tensorboard import TensorBoardLogger


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_disabled_logger_does_nothing(tmp_path):
    tb = TensorBoardLogger(None)
    assert not tb.enabled
    tb.scalar("a", 1.0, 0)
    tb.scalars("b", {"x": 2.0}, 0)
    tb.flush()
    tb.close()
    tb.close()
    assert list(tmp_path.iterdir()) == []


def test_writer_opens_on_first_value_and_logs_scalars(tmp_path):
    log_dir = tmp_path / "tb"
    tb = TensorBoardLogger(log_dir, filename_suffix=".epochs")
    assert tb.enabled and not log_dir.exists()  # nothing opened before the first value
    clone = pickle.loads(pickle.dumps(tb))
    assert clone.log_dir == str(log_dir)
    tb.scalar("train/lr", 0.5, 1)
    tb.scalar("train/lr", np.float32(0.25), 2)
    tb.scalars("val", {"AP": torch.tensor(0.75), "AP50": np.float64(0.5)}, 2)
    tb.scalars("epoch/train", {"total": 3.0}, 2, sep="_")
    tb.scalars("", {"bare": 1}, 3)
    tb.flush()
    files = list(log_dir.iterdir())
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents") and files[0].name.endswith(".epochs")
    # an open logger pickles too (the open file is not copied: the copy opens its own on first use)
    assert pickle.loads(pickle.dumps(tb))._writer is None
    tb.close()
    tb.close()
    events = _events(log_dir)
    assert events["train/lr"] == [(1, 0.5), (2, 0.25)]
    assert events["val/AP"] == [(2, 0.75)] and events["val/AP50"] == [(2, 0.5)]
    assert events["epoch/train_total"] == [(2, 3.0)] and events["bare"] == [(3, 1.0)]
