"""End-to-end tests of paper 004's pipeline: `detgym train`, `detgym find-threshold`, `detgym predict`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch

from detgym.cli import main
from detgym.data import DigitsConfig, write_digits
from detgym.pipeline import RunDir, pick_best, threshold_grid
from detgym.pipeline.strings import DetectionTable
from detgym.train import load_checkpoint_file

TRAIN_ARGS = ["--epochs", "2", "--batch-size", "8", "--image-size", "96", "--no-progress", "--seed", "1"]


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """A paper-004 layout (train/ valid/ test/ + train.json valid.json test.json): 32 / 8 / 8 images at 96 px."""
    cfg = DigitsConfig(image_size=96, max_digit_height=80.0, train_size=32, val_size=8, test_size=8)
    return write_digits(tmp_path_factory.mktemp("pipe") / "digits", seed=0, config=cfg)


@pytest.fixture(scope="module")
def trained_run(digits_dir, tmp_path_factory):
    """One finished run, built once; tests read it and never write into it (see :func:`run_copy`)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", str(digits_dir), "--out", str(run), *TRAIN_ARGS]) == 0
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run, for a test that writes into it (threshold.json, ...)."""
    copy = tmp_path / "run_copy"
    shutil.copytree(trained_run, copy)
    return copy


@pytest.fixture
def interactive_sigint():
    """SIGINT handled as in an interactive shell (Python's default handler), whatever the test process was started
    with (``nohup`` and background jobs ignore SIGINT); the previous handler is put back afterwards."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_train_writes_a_complete_run(trained_run, digits_dir):
    run = RunDir(trained_run)
    cfg = run.read_config()
    assert (cfg.family, cfg.backbone, cfg.epochs, cfg.iters_per_epoch, cfg.image_size) == (
        "fasterrcnn", "tiny", 2, 4, 96)
    # from-scratch backbone: the head's learning rate (paper 004's 0.5x is for trained backbones, see finetune)
    assert cfg.train["backbone_lr_mult"] == 1.0 and cfg.train["schedule"] == "cosine"
    assert cfg.train["iterations"] == 8 and cfg.no_aug_epochs == 1 and cfg.data == str(digits_dir.resolve())
    history = json.loads(run.history_file.read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["augment"] for h in history] == [True, False]  # augmentation off for the last epoch
    for h in history:
        assert set(h["train_loss"]) == {
            "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "total"}
        assert set(h["val_loss"]) == set(h["train_loss"])
        assert {"AP", "AP50", "AP75"} <= set(h["val"]) and 0 <= h["val_accuracy"] <= 1
    # learning rate ends at the cosine's minimum
    assert history[-1]["lr"] == pytest.approx(cfg.min_lr, rel=1e-6)
    last = load_checkpoint_file(run.last)  # plain data: loads with weights_only=True
    assert last["iteration"] == 8 and last["pipeline"]["epochs_done"] == 2
    best = load_checkpoint_file(run.best)
    assert set(best) == {"model", "pipeline"} and best["pipeline"]["epoch"] in (1, 2)
    for png in ("loss.png", "map.png"):
        assert (run.plots / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in run.tensorboard.iterdir())


def test_find_threshold_prints_the_table_and_stores_the_best(run_copy, capsys):
    assert not RunDir(run_copy).threshold_file.exists()
    rc = main(["find-threshold", "--run", str(run_copy), "--from", "0.05", "--to", "0.5", "--step", "0.05"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "threshold" in out and "accuracy" in out and "<- best" in out
    rec = json.loads(RunDir(run_copy).threshold_file.read_text())
    assert [r["threshold"] for r in rec["table"]] == pytest.approx([0.05 * k for k in range(1, 11)])
    best = pick_best(rec["table"])
    assert rec["threshold"] == best["threshold"] and rec["accuracy"] == best["accuracy"]
    assert rec["checkpoint"] == "best.pt" and rec["split"] == "val"


def test_threshold_grid_and_best_rule():
    assert len(threshold_grid(0.45, 0.9, 0.01)) == 46
    assert threshold_grid(0.5, 0.5, 0.1).tolist() == [0.5]
    rows = [{"threshold": 0.5, "accuracy": 0.8, "AP": 0.3}, {"threshold": 0.6, "accuracy": 0.8, "AP": 0.4},
            {"threshold": 0.7, "accuracy": 0.8, "AP": 0.4}, {"threshold": 0.8, "accuracy": 0.7, "AP": 0.9}]
    assert pick_best(rows)["threshold"] == 0.6  # accuracy first, then mAP, then the lower threshold


def _reference_predictions(run_dir, files, ids, batch_size=8):
    """pred.json as `detgym predict` computed it before its eval loop was shared with Trainer.predict."""
    from detgym.data.io import read_image
    from detgym.pipeline import build_run_model, load_model_weights

    cfg = RunDir(run_dir).read_config()
    model = build_run_model(cfg, pretrained=False)
    load_model_weights(model, RunDir(run_dir).best)
    model.eval()
    label_to_cat = np.zeros(max(cfg.label_to_category_id) + 1, dtype=np.int64)
    for lab, cat in cfg.label_to_category_id.items():
        label_to_cat[lab] = cat
    results = []
    with torch.inference_mode():
        for start in range(0, len(files), batch_size):
            outs = model([read_image(f).float().div_(255.0) for f in files[start : start + batch_size]])
            for k, o in enumerate(outs):
                boxes = o["boxes"].float().cpu().numpy()
                scores = o["scores"].float().cpu().numpy()
                cats = label_to_cat[o["labels"].cpu().numpy()]
                for b, sc, c in zip(boxes, scores, cats):
                    results.append({"image_id": ids[start + k], "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]),
                                                                          float(b[3] - b[1])],
                                    "score": float(sc), "category_id": int(c)})
    return results


def _csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_predict_writes_pred_json_and_csv(run_copy, digits_dir, tmp_path, capsys):
    from detgym.pipeline import list_images

    out = tmp_path / "pred"
    rc = main(["predict", "--run", str(run_copy), "--images", str(digits_dir / "test"), "--out", str(out),
               "--threshold", "0.1", "--num-workers", "2"])
    assert rc == 0
    log = capsys.readouterr().out
    assert "images/s" in log and "test.json" in log  # ids from test.json beside test/
    gt = json.loads((digits_dir / "test.json").read_text())
    ids = sorted(im["id"] for im in gt["images"])
    preds = json.loads((out / "pred.json").read_text())
    assert isinstance(preds, list) and preds
    for p in preds:
        assert list(p) == ["image_id", "bbox", "score", "category_id"]
        assert p["image_id"] in ids and 1 <= p["category_id"] <= 10 and len(p["bbox"]) == 4
        assert p["bbox"][2] >= 0 and p["bbox"][3] >= 0 and 0 <= p["score"] <= 1
    # the shared eval loop writes what the command wrote before, detection for detection
    files = list_images(digits_dir / "test")
    by_name = {im["file_name"].split("/")[-1]: im["id"] for im in gt["images"]}
    assert preds == _reference_predictions(run_copy, files, [by_name[f.name] for f in files])
    from detgym.metrics import coco_evaluate

    assert 0 <= coco_evaluate(gt, preds)["AP"] <= 1  # a valid COCO results file for the test split
    names = {k: str(k - 1) for k in range(1, 11)}

    def assert_csv_at(threshold):
        rows = _csv_rows(out / "pred.csv")
        assert rows[0] == ["image_id", "pred_label"]
        assert [int(r[0]) for r in rows[1:]] == ids
        expected = DetectionTable(preds, ids).strings(threshold, names)
        for iid, label in rows[1:]:
            assert label == expected[int(iid)]
            assert label == "-1" or label.isdigit()

    assert_csv_at(0.1)
    # No --threshold and none stored: 0.5, with a note.
    assert not RunDir(run_copy).threshold_file.exists()
    assert main(["predict", "--run", str(run_copy), "--images", str(digits_dir / "test"), "--out", str(out)]) == 0
    assert "has no stored threshold" in capsys.readouterr().out
    assert_csv_at(0.5)
    # The stored threshold is the default for the csv.
    RunDir(run_copy).threshold_file.write_text(json.dumps({"threshold": 0.3}))
    assert main(["predict", "--run", str(run_copy), "--images", str(digits_dir / "test"), "--out", str(out)]) == 0
    assert "threshold 0.300 (stored in threshold.json)" in capsys.readouterr().out
    assert_csv_at(0.3)
    assert json.loads((out / "pred.json").read_text()) == preds  # pred.json does not depend on the threshold


def test_predict_image_ids(trained_run, digits_dir, tmp_path):
    src = sorted((digits_dir / "test").glob("*.png"))
    numbered = tmp_path / "numbered"
    numbered.mkdir()
    for name, f in zip(["12.png", "3.png", "7.jpg"], src):
        if name.endswith(".jpg"):
            from PIL import Image

            Image.open(f).convert("RGB").save(numbered / name)
        else:
            shutil.copy(f, numbered / name)
    out = tmp_path / "o1"
    assert main(["predict", "--run", str(trained_run), "--images", str(numbered), "--out", str(out),
                 "--no-progress"]) == 0
    assert [r.split(",")[0] for r in (out / "pred.csv").read_text().splitlines()[1:]] == ["3", "7", "12"]
    named = tmp_path / "named"
    named.mkdir()
    for name, f in zip(["b.png", "a.png"], src):
        shutil.copy(f, named / name)
    out = tmp_path / "o2"
    assert main(["predict", "--run", str(trained_run), "--images", str(named), "--out", str(out), "--no-progress"]) == 0
    assert [r.split(",")[0] for r in (out / "pred.csv").read_text().splitlines()[1:]] == ["1", "2"]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 41, "file_name": "a.png"}, {"id": 40, "file_name": "sub/b.png"}]}))
    out = tmp_path / "o3"
    assert main(["predict", "--run", str(trained_run), "--images", str(named), "--out", str(out), "--ann", str(ann),
                 "--no-progress"]) == 0
    assert [r.split(",")[0] for r in (out / "pred.csv").read_text().splitlines()[1:]] == ["40", "41"]


@pytest.mark.parametrize("how", ["KeyboardInterrupt", "SIGINT"])
def test_interrupt_then_resume_matches_an_uninterrupted_run(how, trained_run, digits_dir, tmp_path, monkeypatch,
                                                            capsys, request):
    from detgym.train import Trainer

    if how == "SIGINT":
        request.getfixturevalue("interactive_sigint")  # a real Ctrl-C needs a terminal's SIGINT, even under nohup
    before = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    real_step = Trainer.step
    calls = {"n": 0}
    during = []

    def flaky_step(self, *a, **k):
        calls["n"] += 1
        during.append(signal.getsignal(signal.SIGINT))
        if calls["n"] == 6:  # epoch 2, iteration 2 of 4
            if how == "KeyboardInterrupt":
                raise KeyboardInterrupt
            # A real Ctrl-C: the running iteration finishes, then the loop saves and stops.
            result = real_step(self, *a, **k)
            os.kill(os.getpid(), signal.SIGINT)
            return result
        return real_step(self, *a, **k)

    monkeypatch.setattr(Trainer, "step", flaky_step)
    rc = main(["train", "--data", str(digits_dir), "--out", str(run), *TRAIN_ARGS])
    assert rc == 130
    assert signal.getsignal(signal.SIGINT) is before  # the handler from before is back
    if before is signal.SIG_IGN:  # started under nohup: an ignored SIGINT stays ignored, no handler installed
        assert all(h is signal.SIG_IGN for h in during)
    else:
        assert len(during) == 6 and all(callable(h) and h is not before for h in during)
    err = capsys.readouterr().err
    assert f"detgym train --out {run} --resume" in err and "epoch 2/2" in err
    state = load_checkpoint_file(run / "last.pt")
    done = 5 if how == "KeyboardInterrupt" else 6
    assert state["iteration"] == done and state["pipeline"]["epochs_done"] == 1
    assert state["pipeline"]["interrupted"] and state["pipeline"]["partial"]["count"] == done - 4
    monkeypatch.setattr(Trainer, "step", real_step)
    # Options that would change the run are refused on resume.
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.1"]) == 2
    assert "--lr cannot be changed" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    resumed = json.loads((run / "history.json").read_text())
    reference = json.loads((trained_run / "history.json").read_text())
    assert [h["epoch"] for h in resumed] == [1, 2]
    for a, b in zip(resumed, reference):
        assert a["val"] == pytest.approx(b["val"]) and a["val_loss"] == pytest.approx(b["val_loss"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    ma = load_checkpoint_file(run / "last.pt")["model"]
    mb = load_checkpoint_file(trained_run / "last.pt")["model"]
    assert all(torch.allclose(ma[k].float(), mb[k].float(), atol=1e-6) for k in mb)
    # A finished run refuses a new train into the same directory.
    assert main(["train", "--data", str(digits_dir), "--out", str(run), *TRAIN_ARGS]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_stop_request_keeps_an_ignored_sigint_ignored():
    from detgym.pipeline.train import _StopRequest

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what nohup / a background job starts with
    try:
        with _StopRequest() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # nothing installed while it runs
            os.kill(os.getpid(), signal.SIGINT)
        assert not stop.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN

        def custom(signum, frame):
            pass

        signal.signal(signal.SIGINT, custom)
        with _StopRequest() as stop:
            assert signal.getsignal(signal.SIGINT) not in (custom, signal.SIG_IGN)
            os.kill(os.getpid(), signal.SIGINT)  # first Ctrl-C: a request, no exception
            assert stop.requested and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is custom
    finally:
        signal.signal(signal.SIGINT, old)


def test_finetune_starts_from_the_checkpoint(trained_run, digits_dir, tmp_path, capsys):
    run = tmp_path / "ft"
    rc = main(["train", "--data", str(digits_dir), "--out", str(run), "--finetune", str(trained_run / "best.pt"),
               "--epochs", "1", "--lr", "1e-5", "--warmup-epochs", "0", "--no-augment", "--no-progress",
               "--batch-size", "8"])
    assert rc == 0
    cfg = RunDir(run).read_config()
    # architecture taken from the checkpoint's run (image size 96) when not given
    assert cfg.image_size == 96 and cfg.finetune.endswith("best.pt") and cfg.augment is None
    assert cfg.train["backbone_lr_mult"] == 0.5  # paper 004's layer-wise lr for a trained backbone
    assert cfg.train["warmup_iters"] == 0 and cfg.lr == 1e-5
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"nope": torch.zeros(1)}}, bad)
    assert main(["train", "--data", str(digits_dir), "--out", str(tmp_path / "ft2"), "--finetune", str(bad),
                 "--epochs", "1", "--no-progress"]) == 2
    assert "does not fit" in capsys.readouterr().err


def _expect_error(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "detgym: error:" in err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, (f, err)


def test_bad_inputs(trained_run, digits_dir, tmp_path, capsys):
    # data: missing path, malformed / missing annotation file
    _expect_error(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r0")], capsys, "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(digits_dir, broken)
    (broken / "train.json").write_text("{not json")
    _expect_error(["train", "--data", str(broken), "--out", str(tmp_path / "r1")], capsys, "train.json", "malformed")
    (broken / "train.json").unlink()
    _expect_error(["train", "--data", str(broken), "--out", str(tmp_path / "r2")], capsys, "train")
    # options
    _expect_error(["train", "--data", str(digits_dir), "--out", str(tmp_path / "r3"), "--lr", "0.001", "--min-lr",
                   "0.01"], capsys, "--min-lr")
    _expect_error(["train", "--data", str(digits_dir), "--out", str(tmp_path / "r4"), "--epochs", "2",
                   "--no-aug-epochs", "3"], capsys, "--no-aug-epochs")
    _expect_error(["train", "--out", str(tmp_path / "r5"), "--resume"], capsys, "r5")
    # run directories without a checkpoint
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_error(["find-threshold", "--run", str(empty)], capsys, "config.json", str(empty))
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(trained_run / "config.json", no_ckpt / "config.json")
    _expect_error(["find-threshold", "--run", str(no_ckpt)], capsys, "holds no checkpoint", str(no_ckpt))
    _expect_error(["predict", "--run", str(no_ckpt), "--images", str(digits_dir / "test"), "--out", str(tmp_path)],
                  capsys, "holds no checkpoint")
    # empty threshold ranges
    _expect_error(["find-threshold", "--run", str(trained_run), "--from", "0.9", "--to", "0.5"],
                  capsys, "--from", "--to")
    _expect_error(["find-threshold", "--run", str(trained_run), "--step", "0"], capsys, "--step")
    # unreadable image: a clear error naming it, and no half-written (or any) pred files
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(sorted((digits_dir / "test").glob("*.png"))[0], imgs / "1.png")
    (imgs / "2.png").write_bytes(b"this is not a png")
    out = tmp_path / "pred_out"
    _expect_error(["predict", "--run", str(trained_run), "--images", str(imgs), "--out", str(out)], capsys, "2.png")
    assert not (out / "pred.json").exists() and not (out / "pred.csv").exists()
    no_imgs = tmp_path / "no_imgs"
    no_imgs.mkdir()
    _expect_error(["predict", "--run", str(trained_run), "--images", str(no_imgs), "--out", str(out)],
                  capsys, "no_imgs")
    _expect_error(["predict", "--run", str(trained_run), "--images", str(imgs), "--out", str(out), "--ann",
                   str(tmp_path / "missing.json")], capsys, "missing.json")


def test_defaults_follow_the_recipes(digits_dir, tmp_path):
    from detgym.data import load_dataset
    from detgym.pipeline import TrainOptions, resolve_run_config
    from detgym.train import get_recipe

    train = load_dataset(digits_dir, "train")
    cfg = resolve_run_config(TrainOptions(out=str(tmp_path / "a")), train)
    rt = get_recipe("fasterrcnn-tiny").train
    assert (cfg.family, cfg.backbone, cfg.res_fpn, cfg.image_size) == ("fasterrcnn", "tiny", False, 128)
    assert cfg.lr == rt.lr and cfg.batch_size == rt.batch_size and cfg.epochs >= 5
    assert cfg.min_lr == pytest.approx(rt.lr * rt.min_lr_ratio) and cfg.train["backbone_lr_mult"] == 1.0
    # paper 004's ResFPN v2 recipe; its res_fpn flag is the run's own, not a duplicate model keyword
    cfg = resolve_run_config(TrainOptions(out=str(tmp_path / "b"), backbone="resnet50_v2", res_fpn=True,
                                          pretrained="coco"), train)
    assert cfg.lr == 1e-4 and cfg.res_fpn and "res_fpn" not in cfg.model_kwargs and cfg.image_size is None
    assert cfg.train["backbone_lr_mult"] == 0.5 and cfg.train["weight_decay"] == 5e-4
