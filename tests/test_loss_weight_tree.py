"""Trees of DetLossWeight trainings and the tabular env: exact against the real env, resumable, refusing bad data."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import detgym  # noqa: F401  registers the ids
from detgym.envs.loss_weight.tabular import DetLossWeightTabularEnv, TabularPreset, _load_table
from detgym.envs.loss_weight.tree import (
    TreeSpec,
    TreeTable,
    build_tree,
    fidelity_check,
    node_name,
    packaged_table,
    tree_preset,
)

SMALL = TreeSpec("test", decisions=2, overrides={"iterations": 24})


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A complete tree of seed 0 (21 nodes of 8 iterations), its table file and its build cache."""
    root = tmp_path_factory.mktemp("tree")
    report = build_tree(SMALL, [0], out=root / "table.json", cache_dir=root / "cache", progress=False)
    return root, report


def _strip_times(record):
    return {k: v for k, v in record.items() if not k.endswith("_s")}


def test_a_tree_holds_every_schedule_and_its_leaves_are_the_real_env(small):
    root, report = small
    table = report.table
    assert report.computed == SMALL.n_nodes() == 21 and table.complete_seeds() == [0]
    assert len(table.leaves(0)) == 16
    for actions in ((3, 3), (0, 2)):
        stored, rerun = fidelity_check(table, 0, actions, threads=1)
        assert stored == rerun
    # the leaf's observation and every val stat, not only AP
    env = gym.make("DetLossWeight-Test-v0", iterations=24, alpha=SMALL.alpha)
    env.reset(seed=0)
    for a in (0, 2):
        obs, _, _, truncated, info = env.step(a)
    leaf = table.node(0, (0, 2))
    assert truncated and np.array_equal(obs, np.asarray(leaf["obs"], dtype=np.float32))
    assert info["final_metrics"] == leaf["stats"]


def test_a_rebuild_trains_nothing_and_a_lost_node_is_derived_again_exactly(small):
    root, report = small
    again = build_tree(SMALL, [0], out=root / "table.json", cache_dir=root / "cache", progress=False)
    assert again.computed == 0
    # a table committed without its cache: the parent's snapshot is gone, the node is derived from the root again
    table = TreeTable.load(root / "table.json", SMALL)
    lost = table.nodes[0].pop(node_name((1, 2)))
    table.save(root / "partial.json")
    fresh = build_tree(SMALL, [0], out=root / "partial.json", cache_dir=root / "fresh-cache", progress=False)
    assert fresh.computed == 1
    assert _strip_times(fresh.table.node(0, (1, 2))) == _strip_times(lost)


def test_damaged_or_stale_tables_are_refused_with_their_path(small, tmp_path):
    root, _ = small
    data = json.loads((root / "table.json").read_text())
    data["nodes"]["0"]["r"]["stats"]["AP"] += 0.5
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="damaged.json.*checksum"):
        TreeTable.load(damaged, SMALL)
    with pytest.raises(ValueError, match="stale"):
        TreeTable.load(root / "table.json", TreeSpec("test", decisions=2, overrides={"iterations": 32}))
    with pytest.raises(ValueError, match="threads=2"):
        fidelity_check(TreeTable.load(root / "table.json", SMALL), 0, (3, 3), threads=2)


@pytest.mark.parametrize("make, match", [
    (lambda: TreeSpec("test", decisions=0), "decisions"),
    (lambda: TreeSpec("test", decisions=40), "decisions=40 is too many"),
    (lambda: TreeSpec("nope", decisions=2).config, "unknown preset"),
    (lambda: TreeSpec("test", threads=0), "threads"),
    (lambda: TreeSpec("test", overrides={"alpha": 3}), "alpha"),
    (lambda: tree_preset("DetBoxSelect-v0"), "has no tree"),
])
def test_bad_tree_input_names_the_parameter(make, match):
    with pytest.raises(ValueError, match=match):
        spec = make()
        spec.alpha  # noqa: B018  the decisions are checked against the iterations here


def test_the_shipped_test_table_is_what_the_real_env_gives():
    table = TreeTable.load(packaged_table("test", 2), TreeSpec("test", 2, overrides={"iterations": 96}))
    stored, rerun = fidelity_check(table, 1, table.best_leaf(1)[0])
    assert stored == rerun


def test_tabular_episode_returns_telescope_and_report_regret_and_recipe():
    env = gym.make("DetLossWeightTabular-Test-v0")
    table = env.unwrapped.table
    for reward, expected in (("delta_ap", lambda root, leaf: leaf - root), ("map", lambda root, leaf: leaf)):
        env = gym.make("DetLossWeightTabular-Test-v0", reward=reward)
        _, info = env.reset(seed=0, options={"tree_seed": 1})
        ret = 0.0
        for a in (2, 0):
            _, r, terminated, truncated, info = env.step(a)
            ret += r
        assert not terminated and truncated
        root, leaf = table.node(1, ())["stats"]["AP"], table.node(1, (2, 0))["stats"]["AP"]
        assert ret == pytest.approx(expected(root, leaf), abs=1e-12)
        best_actions, best = table.best_leaf(1)
        assert info["regret"] == pytest.approx(best - leaf) and info["regret"] >= 0
        assert info["recipe"] == {"env_id": "DetLossWeight-Test-v0", "env_kwargs": {"preset": "test", "iterations": 96,
                                  "alpha": 32}, "seed": 1, "actions": [2, 0], "threads": 1}
    env = gym.make("DetLossWeightTabular-Test-v0", reward="loss")
    env.reset(seed=0, options={"tree_seed": 0})
    assert env.step(1)[1] == table.node(0, (1,))["reward_loss"]
    env.reset(options={"tree_seed": 0})
    for a in table.best_leaf(0)[0]:
        *_, info = env.step(a)
    assert info["regret"] == 0.0


def test_tabular_bad_input():
    with pytest.raises(ValueError, match="tree_seed"):
        gym.make("DetLossWeightTabular-Test-v0").reset(options={"tree_seed": 7})
    with pytest.raises(ValueError, match="reward"):
        DetLossWeightTabularEnv("test", reward="ap")
    with pytest.raises(ValueError, match="no tree table.*detgym build-tree"):
        _load_table(TabularPreset("test", 1, {"iterations": 8}), None, "/nonexistent-cache")
    env = gym.make("DetLossWeightTabular-Test-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(4)


@pytest.mark.parametrize("name", ["uniform", "avw", "rlo", "a2", "random", "ppo", "a2c", "dqn", "recurrent_ppo"])
def test_every_loss_weight_agent_runs_unchanged_on_the_tabular_env(name):
    from detgym.agents import make_agent, run_episode

    env = gym.make("DetLossWeightTabular-Test-v0")
    agent = make_agent(name, env=env, seed=0)
    if hasattr(agent, "learn"):
        agent.learn(64)
    episode = run_episode(env, agent, seed=3)
    assert episode.length == 2 and episode.last_info["regret"] >= 0
