"""The keys that name caches and results never change by accident: the resolved configurations' hashes of the
presets behind the README's comparisons, and the run keys of its agents, are pinned here (computed before the hash
moved into :mod:`detgym._hashing`); a ``runs.jsonl`` or a cache made before still matches."""

from __future__ import annotations

import numpy as np
import pytest

from detgym._hashing import jsonable, stable_hash
from detgym.compare.grid import _agent_key
from detgym.envs.box_select.candidates import detector_key
from detgym.envs.box_select.presets import PRESETS as BOX_SELECT
from detgym.envs.loss_weight.presets import PRESETS as LOSS_WEIGHT
from detgym.envs.sample_select.presets import PRESETS as SAMPLE_SELECT

TABLES = {"loss_weight": LOSS_WEIGHT, "box_select": BOX_SELECT, "sample_select": SAMPLE_SELECT}
CONFIG_KEYS = {
    ("loss_weight", "retinanet-lambda4"): "cdfde58ff8a6d66f",  # DetLossWeight-v0
    ("loss_weight", "retinanet"): "be1d2095150d48ab",
    ("loss_weight", "test"): "a915309094c54cdd",
    ("box_select", "fasterrcnn"): "818c9e1a956379a7",  # DetBoxSelect-v0
    ("box_select", "test"): "50d10613f505712b",
    ("sample_select", "digits"): "e751d6d1c043bb8b",  # DetSampleSelect-v0
    ("sample_select", "test"): "f881c8041c9978cd",
}


@pytest.mark.parametrize("family, name", list(CONFIG_KEYS), ids=["/".join(k) for k in CONFIG_KEYS])
def test_preset_config_keys_are_those_published(family, name):
    assert TABLES[family][name].config_key() == CONFIG_KEYS[family, name]


def test_cache_keys_are_unchanged():
    assert detector_key(BOX_SELECT["fasterrcnn"]) == "951ba7b127d9833c"
    assert detector_key(BOX_SELECT["test"]) == "ff6fc8cc92098087"
    assert SAMPLE_SELECT["digits"].table_key() == "f8ebc0e225885514"
    assert SAMPLE_SELECT["test"].table_key() == "89898fab7ef3957d"


def test_agent_keys_of_the_readme_runs_are_unchanged():
    # (agent, kwargs, train budget, evaluated episodes, threads) of the README's commands and the test suite's
    assert _agent_key("uniform", {}, None, 1, 1) == "2f713057"
    assert _agent_key("ppo", {}, 148, 1, 1) == "7880cc12"
    assert _agent_key("nms", {}, None, 100, 1) == "54acc9f0"
    assert _agent_key("ppo", {}, 2048, 100, 1) == "1b1b4c0c"
    assert _agent_key("random", {}, None, 1, 1) == "b1839668"
    assert _agent_key("ppo", {"n_steps": 8, "batch_size": 8}, 12, 1, 1) == "3cd02fab"
    # a user's agent is keyed by its source too
    assert _agent_key("mine", {}, None, 1, 1, source="pkg.mod:Mine") != _agent_key("mine", {}, None, 1, 1)


def test_jsonable_and_stable_hash():
    value = {"b": (1, np.float32(0.5)), "a": {"y": np.arange(3), 2: np.bool_(True)}}
    assert jsonable(value) == {"a": {"2": True, "y": [0, 1, 2]}, "b": [1, 0.5]}
    assert list(jsonable(value)) == ["a", "b"]
    assert stable_hash({"x": 1, "y": [1, 2]}) == stable_hash({"y": [1, 2], "x": 1}) == "0e1254ab614fb44f"
    assert len(stable_hash("x", 8)) == 8
