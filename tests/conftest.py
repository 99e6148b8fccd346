"""Shared fixtures: tiny digits splits generated once per test session in a temporary cache."""

from __future__ import annotations

import pytest
import torch

# One torch thread for the whole suite: the test models are tiny (32-128 px), and two OpenMP threads per
# process lose several times over to any other load on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory):
    """``$DETGYM_CACHE`` for the whole session: a temporary directory, so the tests never touch the user's cache, and
    one place where every test (and every subprocess it starts) finds the datasets, candidate detectors and tables
    that an earlier test already built."""
    path = tmp_path_factory.mktemp("detgym-session-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("DETGYM_CACHE", str(path))
    yield path
    patch.undo()


@pytest.fixture
def private_digits_cache(tmp_path, monkeypatch):
    """A per-test digits cache (``$DETGYM_CACHE``) and an empty in-process cache before and after the test."""
    from detgym.data import clear_memory_cache

    monkeypatch.setenv("DETGYM_CACHE", str(tmp_path / "cache"))
    clear_memory_cache()
    yield
    clear_memory_cache()


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("detgym-cache")


@pytest.fixture(scope="session")
def tiny_digits(digits_cache):
    """(train, val) splits of a small digits set at 96 px: enough for real training steps, fast on 2 cores."""
    from detgym.data import DigitsConfig, digits_dataset

    config = DigitsConfig(image_size=96, train_size=48, val_size=12, test_size=8)
    train = digits_dataset("train", seed=0, cache_dir=digits_cache, config=config)
    val = digits_dataset("val", seed=0, cache_dir=digits_cache, config=config)
    return train, val


@pytest.fixture(scope="session")
def box_select_kw(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Constructor arguments of the box-select test envs: one session-wide cache, so the candidate detector of the
    test preset is trained once for every module that uses it."""
    root = tmp_path_factory.getbasetemp() / "box-select"
    return {"cache_dir": str(root / "cache"), "dataset_kwargs": {"cache_dir": str(root / "digits")}}
