"""Tests of the `detgym` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from detgym.cli import build_parser, main
from detgym.data import load_dataset


def test_data_digits_writes_a_tiny_set(tmp_path, capsys):
    out = tmp_path / "digits"
    rc = main(["data", "digits", "--out", str(out), "--seed", "3", "--train", "5", "--val", "2", "--test", "1",
               "--image-size", "64", "--max-height", "40"])
    assert rc == 0
    assert "train 5, val 2, test 1" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train", "valid", "test", "train.json", "valid.json", "test.json", "detgym_digits.json"])
    assert len(list((out / "train").glob("*.png"))) == 5
    meta = json.loads((out / "detgym_digits.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["image_size"] == 64
    ds = load_dataset(out, "val")
    assert len(ds) == 2 and ds.images[0].shape == (3, 64, 64)
    # Same command again: refused without --overwrite, fine with it.
    assert main(["data", "digits", "--out", str(out), "--train", "1", "--val", "1", "--test", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "digits", "--out", str(out), "--train", "1", "--val", "1", "--test", "1",
                 "--overwrite"]) == 0


def test_small_image_size_caps_digit_height(tmp_path):
    assert main(["data", "digits", "--out", str(tmp_path / "s"), "--train", "3", "--val", "0", "--test", "0",
                 "--image-size", "48"]) == 0
    meta = json.loads((tmp_path / "s" / "detgym_digits.json").read_text())
    assert meta["config"]["max_digit_height"] == 44


def test_bad_arguments(tmp_path, capsys):
    rc = main(["data", "digits", "--out", str(tmp_path / "x"), "--image-size", "64", "--max-height", "90"])
    assert rc == 2
    assert "max_digit_height" in capsys.readouterr().err
    rc = main(["data", "digits", "--out", str(tmp_path / "x"), "--image-size", "8"])
    assert rc == 2
    assert "image_size" in capsys.readouterr().err
    for option, value, message in (("--train", "-3", "got -3"), ("--seed", "x", "got 'x'")):
        with pytest.raises(SystemExit):
            main(["data", "digits", "--out", str(tmp_path / "x"), option, value])
        assert f"argument {option}: must be an integer >= 0, {message}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "svhn", "--out", str(tmp_path / "x")])
    assert main([]) == 2


def test_parser_lists_data_verb():
    assert "data" in build_parser().format_help()


def test_python_dash_m_detgym_from_any_directory(tmp_path):
    ran = subprocess.run([sys.executable, "-m", "detgym", "compare", "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0 and "--agents" in ran.stdout and "pkg.module:Factory" in ran.stdout
