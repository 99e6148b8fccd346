"""A checkpoint is data, never code: crafted pickles are refused wherever detgym reads a checkpoint."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from detgym.cli import main
from detgym.data import DigitsConfig, write_digits
from detgym.models import build_detector
from detgym.pipeline import RunDir, TrainOptions, load_model_weights, resolve_run_config
from detgym.train import TrainConfig, Trainer
from detgym.train.checkpoint import (
    UnsafeCheckpointError,
    atomic_torch_save,
    load_checkpoint_file,
    load_plain,
    plain_data,
)


class _RunsACommand:
    """Unpickling this calls os.system: what a malicious "checkpoint" would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _crafted(path, marker, *, legacy=False):
    payload = {"model": {"w": torch.zeros(1)}, "iteration": 0, "pipeline": {}, "x": _RunsACommand(f"touch {marker}")}
    if legacy:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    else:
        torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    cfg = DigitsConfig(image_size=64, max_digit_height=50.0, train_size=4, val_size=2, test_size=2)
    return write_digits(tmp_path_factory.mktemp("sec") / "digits", seed=0, config=cfg)


def _run_dir(tmp_path, digits_dir):
    """A run directory with a real config.json (no training needed to refuse its checkpoints)."""
    from detgym.data import load_dataset

    train = load_dataset(digits_dir, "train")
    cfg = resolve_run_config(TrainOptions(out=str(tmp_path / "run"), data=str(digits_dir.resolve()), epochs=1,
                                          image_size=64, device="cpu"), train)
    cfg.val_size = 2
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_config(cfg)
    return run


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("legacy", [False, True], ids=["torch-zip", "raw-pickle"])
def test_crafted_pickle_is_refused_and_never_run(tmp_path, legacy):
    marker = tmp_path / "pwned"
    evil = _crafted(tmp_path / "evil.pt", marker, legacy=legacy)
    with pytest.raises(ValueError, match=r"evil\.pt.* not a plain-data (torch )?checkpoint") as info:
        load_checkpoint_file(evil)
    if not legacy:  # torch's own format: the refused function is named
        assert isinstance(info.value, UnsafeCheckpointError) and "system" in str(info.value)
    assert not marker.exists()
    # the same file loaded the old way would have run the command: the test's payload is real
    if not legacy:
        torch.load(evil, weights_only=False)
        assert marker.exists()


def test_every_entry_point_refuses_it(tmp_path, digits_dir, capsys):
    marker = tmp_path / "pwned"
    evil = _crafted(tmp_path / "evil.pt", marker)
    model = build_detector("fasterrcnn", num_classes=10, image_size=64)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        load_model_weights(model, evil)
    run = _run_dir(tmp_path, digits_dir)
    # detgym predict --run (best.pt), --resume (last.pt), --finetune FILE
    _crafted(run.best, marker)
    _crafted(run.last, marker)
    argvs = [
        ["predict", "--run", str(run.path), "--images", str(digits_dir / "test"), "--out", str(tmp_path / "pred")],
        ["train", "--out", str(run.path), "--resume", "--no-progress"],
        ["train", "--data", str(digits_dir), "--out", str(tmp_path / "ft"), "--finetune", str(evil), "--epochs", "1"],
    ]
    for argv in argvs:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "is not a plain-data checkpoint" in err and "Traceback" not in err, (argv, err)
    assert not marker.exists()


def test_trainer_checkpoints_are_plain_data(tiny_digits, tmp_path):
    train, val = tiny_digits
    torch.manual_seed(0)
    model = build_detector("fasterrcnn", num_classes=10, image_size=96, res_fpn=True)
    cfg = TrainConfig(iterations=4, batch_size=2, warmup_iters=1, optimizer="sgd", backbone_lr_mult=0.5)
    t = Trainer(model, train, val, cfg)
    t.step()
    t.save_checkpoint(tmp_path / "a.pt")
    state = torch.load(tmp_path / "a.pt", weights_only=True)  # nothing to allow-list
    assert state["iteration"] == 1 and state["config"]["optimizer"] == "sgd"
    expected = t.step().level_losses
    torch.manual_seed(0)
    u = Trainer(build_detector("fasterrcnn", num_classes=10, image_size=96, res_fpn=True), train, val, cfg)
    u.load_checkpoint(tmp_path / "a.pt")
    np.testing.assert_array_equal(u.step().level_losses, expected)


def test_saving_keeps_checkpoints_plain(tmp_path):
    # numpy scalars (a metric computed with numpy, say) become Python numbers ...
    atomic_torch_save({"model": {}, "acc": np.float64(0.5), "n": np.int64(3), "ok": np.bool_(True)}, tmp_path / "a.pt")
    state = load_plain(tmp_path / "a.pt")
    assert state == {"model": {}, "acc": 0.5, "n": 3, "ok": True} and type(state["acc"]) is float
    # ... anything else is refused when saving, naming the entry, not discovered when loading
    with pytest.raises(TypeError, match=r"checkpoint\['pipeline'\]\['when'\]"):
        atomic_torch_save({"model": {}, "pipeline": {"when": np.arange(3)}}, tmp_path / "b.pt")
    assert not (tmp_path / "b.pt").exists()
    assert plain_data({"t": (1, [2.0, None]), 3: "x"}) == {"t": (1, [2.0, None]), 3: "x"}
