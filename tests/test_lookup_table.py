"""MGRAL's look-up table (III-F): the estimate on hand-made records, files, build-table, resume, look-up episodes."""

from __future__ import annotations

import numpy as np
import pytest

from detgym.cli import main
from detgym.envs.sample_select import build as build_module
from detgym.envs.sample_select import build_table
from detgym.envs.sample_select.build import build_episode_seed
from detgym.envs.sample_select.env import DetSampleSelectEnv
from detgym.envs.sample_select.lookup import LookupTable


def _table(path, records) -> LookupTable:
    table = LookupTable(path, "k" * 16, {"preset": "hand-made"})
    table.set_reference(0, np.zeros((4, 2), np.float32), np.zeros((4, 5), np.float32), 0.1)
    for cycle, feature, value in records:
        table.add(0, cycle, np.asarray(feature, np.float32), value)
    return table


# ------------------------------------------------------------------ the estimate
def test_estimate_is_inverse_distance_weighted_over_the_nearest_records(tmp_path):
    records = [(1, (0.0, 0.0), 0.2), (1, (3.0, 0.0), 0.4), (1, (0.0, 4.0), 0.6), (1, (9.0, 9.0), 0.9),
               (2, (1.0, 0.0), 0.8)]
    table = _table(tmp_path / "t.npz", records)
    f = np.array([[0, 0], [3, 0], [0, 4], [9, 9]], dtype=np.float64)
    pairs = [np.linalg.norm(f[i] - f[j]) for i in range(4) for j in range(i + 1, 4)]
    assert table.threshold(0, 1) == pytest.approx(np.mean(pairs) - np.std(pairs))
    query = np.array([1.0, 1.0])
    est = table.estimate(0, 1, query, neighbours=3)
    d = np.linalg.norm(f[:3] - query, axis=1)
    w = (1 / d) / (1 / d).sum()
    assert est.value == pytest.approx(float(w @ [0.2, 0.4, 0.6]))
    assert est.records == (0, 1, 2) and np.allclose(est.weights, w) and np.allclose(est.distances, d)
    assert est.n_records == 4 and est.nearest == pytest.approx(np.sqrt(2))
    # a record at distance 0 is the answer itself; records of another cycle are never used
    assert table.estimate(0, 1, np.array([3.0, 0.0])).value == pytest.approx(0.4)
    assert table.estimate(0, 2, np.array([1.0, 0.0])).value is None  # one record: no threshold, train for real


def test_estimate_refused_when_every_record_is_farther_than_the_threshold(tmp_path):
    table = _table(tmp_path / "t.npz", [(1, (0.0, 0.0), 0.2), (1, (1.0, 0.0), 0.3), (1, (0.0, 1.0), 0.4)])
    tau = table.threshold(0, 1)
    est = table.estimate(0, 1, np.array([5.0, 5.0]))
    assert est.value is None and est.nearest > tau and est.records == ()
    assert table.estimate(0, 3, np.array([0.0, 0.0])).value is None  # no record at all
    table.add(0, 1, np.array([5.0, 5.0], np.float32), 0.7)  # the measured record joins: now it is found
    assert table.estimate(0, 1, np.array([5.0, 5.0])).value == pytest.approx(0.7)


def test_ridge_estimate_is_the_penalised_fit_over_every_record_of_the_cycle(tmp_path):
    from detgym.envs.sample_select.lookup import RIDGE_PENALTY, count_summary

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(12, 2)) * [1.0, 5.0]).astype(np.float32).astype(np.float64)  # records keep float32
    y = 0.1 + 0.02 * x[:, 0] - 0.01 * x[:, 1]
    records = [(1, tuple(xi) + (3.0,), yi) for xi, yi in zip(x, y)]  # a constant third column is left out
    table = _table(tmp_path / "t.npz", records + [(2, (0.0, 0.0, 3.0), 0.9), (2, (1.0, 1.0, 3.0), 0.9)])
    query = np.array([0.5, -2.0, 3.0])
    z = (x - x.mean(0)) / x.std(0)
    design = np.c_[np.ones(12), z]
    coef = np.linalg.solve(design.T @ design + RIDGE_PENALTY * np.diag([0.0, 1.0, 1.0]), design.T @ y)
    want = coef[0] + ((query[:2] - x.mean(0)) / x.std(0)) @ coef[1:]
    est = table.estimate(0, 1, query, estimator="ridge", refuse=False)
    assert est.value == pytest.approx(want, abs=1e-12) and est.records == tuple(range(12))
    # penalised towards the mean, ordered as the true linear function; the paper's estimate stays the default
    queries = rng.normal(size=(6, 2)) * [1.0, 5.0]
    values = [table.estimate(0, 1, np.r_[q, 3.0], estimator="ridge", refuse=False).value for q in queries]
    truth = 0.1 + 0.02 * queries[:, 0] - 0.01 * queries[:, 1]
    assert np.array_equal(np.argsort(values), np.argsort(truth))
    assert table.estimate(0, 1, query, refuse=False).value != est.value
    with pytest.raises(ValueError, match="estimator must be one of 'neighbours', 'ridge'"):
        table.estimate(0, 1, query, estimator="knn")
    # the "counts" key: objects, images with objects, class entropy (nats)
    np.testing.assert_allclose(count_summary([np.array([1, 1]), np.array([], dtype=np.int64), np.array([3, 1])]),
                               [4, 2, -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))], rtol=1e-6)


# ------------------------------------------------------------------ files
def test_save_load_round_trip_is_atomic(tmp_path):
    path = tmp_path / "sub" / "t.npz"
    table = _table(path, [(1, (0.0, 1.0), 0.2), (2, (1.0, 1.0), 0.3)])
    table.done.update({0, 2})
    table.save()
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.npz", "t.npz.lock"]  # no temporary file left
    loaded = LookupTable.open(path, "k" * 16, {})
    assert loaded.maps == table.maps and loaded.cycles == [1, 2] and loaded.done == {0, 2}
    assert np.array_equal(loaded.features[1], [1.0, 1.0]) and loaded.reference(0).initial_map == 0.1


def test_records_keep_their_selections_and_format_2_files_still_load(tmp_path):
    import io
    import json

    path = tmp_path / "t.npz"
    table = _table(path, [(1, (0.0, 1.0), 0.2)])
    table.add(0, 2, np.array([1.0, 1.0], np.float32), 0.3, selection=np.array([3, 1, 2]))
    table.save()
    loaded = LookupTable.load(path)
    assert [s.tolist() for s in loaded.selections] == [[], [3, 1, 2]]
    with np.load(path) as npz:  # the same file as format 2 wrote it: no selections
        arrays = {k: npz[k] for k in npz.files if k != "rec_added"}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "format": 2}))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    old = LookupTable.load(path)
    assert old.maps == loaded.maps and [s.size for s in old.selections] == [0, 0]


def test_corrupt_truncated_and_mismatched_files_are_refused(tmp_path):
    path = tmp_path / "t.npz"
    _table(path, [(1, (0.0, 1.0), 0.2)]).save()
    data = path.read_bytes()
    with pytest.raises(ValueError, match=f"lookup table {path} was built for another configuration"):
        LookupTable.open(path, "other-key", {})
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"lookup table {path} is corrupt or truncated") as err:
        LookupTable.open(path, "k" * 16, {})
    assert "\n" not in str(err.value)
    path.write_bytes(b"not a table at all")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        LookupTable.load(path)


# ------------------------------------------------------------------ build-table and look-up episodes
@pytest.fixture(scope="module")
def kw(digits_cache):
    """-Test preset data (and its initial detectors) in the session's private cache."""
    return {"dataset_kwargs": {"cache_dir": str(digits_cache)}}


@pytest.fixture(scope="module")
def built(kw, tmp_path_factory):
    path = tmp_path_factory.mktemp("tables") / "test.npz"
    table = build_table("test", episodes=2, path=path, progress=False, **kw)
    return path, table


def test_build_records_every_cycle_of_every_episode(built):
    path, table = built
    assert table.done == {0, 1} and len(table) == 2 * 2  # 2 episodes x 2 cycles
    assert table.counts() == {(0, 1): 1, (0, 2): 1, (1, 1): 1, (1, 2): 1}
    assert set(table.references) == {0, 1} and LookupTable.load(path).maps == table.maps


class _Interrupted(Exception):
    pass


def test_build_resumes_and_never_reruns_a_finished_episode(built, kw, tmp_path, monkeypatch):
    path, table = built
    copy = tmp_path / "copy.npz"
    copy.write_bytes(path.read_bytes())
    ran = []
    original = build_module._run_build_episode

    crash = [True]

    def crash_on_third(env, tab, episode, seed):
        ran.append(episode)
        if episode == 3 and crash and crash.pop():
            raise _Interrupted  # the build stops in the middle of episode 3 (once)
        original(env, tab, episode, seed)

    monkeypatch.setattr(build_module, "_run_build_episode", crash_on_third)
    with pytest.raises(_Interrupted):
        build_table("test", episodes=4, path=copy, progress=False, **kw)
    assert ran == [2, 3] and LookupTable.load(copy).done == {0, 1, 2}  # episode 2 saved, 3 not
    ran.clear()
    resumed = build_table("test", episodes=4, path=copy, progress=False, **kw)
    assert ran == [3] and resumed.done == {0, 1, 2, 3}
    assert resumed.maps[:4] == table.maps  # earlier records untouched


def test_a_replayed_build_episode_is_estimated_exactly(built, kw, tmp_path):
    """The summary of a build episode's selection equals its record: distance 0, the estimate is the record."""
    path, _ = built
    copy = tmp_path / "replay.npz"
    table = LookupTable.load(path)
    table.path = copy
    table.add(1, 1, table.features[2] + 1e-3, table.maps[2])  # a second record: a threshold exists
    table.add(1, 2, table.features[3] + 1e-3, table.maps[3])
    table.save()
    env = DetSampleSelectEnv("test", reward_mode="lookup", table_path=str(copy), **kw)
    seed = build_episode_seed(0, 1)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed, options={"initial_set": 1})
    assert info["map"] == table.references[1].initial_map
    for cycle in (1, 2):
        obs, r, term, trunc, info = env.step(rng.uniform(-1.0, 1.0, env.n_rows).astype(np.float32))
        assert info["reward_source"] == "estimated" and info["lookup"]["records"][0] == cycle + 1
        assert info["lookup"]["distances"][0] == 0.0 and info["map"] == pytest.approx(table.maps[cycle + 1])
    assert env.model is None  # no detector was needed
    env.close()


def test_lookup_trains_for_real_when_no_record_is_near_and_adds_it(built, kw, tmp_path):
    path, _ = built
    copy = tmp_path / "fallback.npz"
    copy.write_bytes(path.read_bytes())
    env = DetSampleSelectEnv("test", reward_mode="lookup", table_path=str(copy), **kw)
    before = len(env.table)
    obs, info = env.reset(seed=11, options={"initial_set": 0})
    obs, r, term, trunc, info = env.step(np.linspace(1, -1, env.n_rows, dtype=np.float32))
    assert info["reward_source"] == "measured" and info["lookup"]["estimate"] is None
    assert "metrics" in info and info["lookup"]["added_record"] == before
    on_disk = LookupTable.load(copy)
    assert len(on_disk) == before + 1 and on_disk.sources[-1] == 1 and on_disk.maps[-1] == info["map"]
    env.close()


def test_lookup_env_refuses_a_table_of_another_preset(built, kw):
    path, _ = built
    with pytest.raises(ValueError, match=f"lookup table {path} was built for another configuration"):
        DetSampleSelectEnv("test", reward_mode="lookup", table_path=str(path), cycle_iterations=3, **kw)


def test_build_table_command(kw, tmp_path, capsys):
    out = tmp_path / "cli.npz"
    cache = kw["dataset_kwargs"]["cache_dir"]
    args = ["build-table", "--preset", "test", "--episodes", "1", "--out", str(out), "--quiet",
            "--set", f'dataset_kwargs={{"cache_dir": "{cache}"}}']
    assert main(args) == 0
    assert "2 records" in capsys.readouterr().out and len(LookupTable.load(out)) == 2
    out.write_bytes(b"garbage")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"detgym: error: lookup table {out} is corrupt") and "\n" not in err


def test_concurrent_writers_merge_instead_of_losing_records(tmp_path):
    path = tmp_path / "t.npz"
    _table(path, [(1, (0.0, 1.0), 0.2)]).save()
    a, b = LookupTable.load(path), LookupTable.load(path)
    a.add(0, 1, np.array([1.0, 1.0], np.float32), 0.3)
    a.done.add(0)
    a.save()
    b.add(0, 2, np.array([2.0, 1.0], np.float32), 0.4)  # b never saw a's record
    b.save()
    on_disk = LookupTable.load(path)
    assert on_disk.maps == [0.2, 0.3, 0.4] and on_disk.done == {0} and len(set(on_disk.ids)) == 3
    assert b.maps == [0.2, 0.3, 0.4]  # the writer's own view is the merged table too


# ------------------------------------------------------------------ the labels key (DetSampleSelect-v1)
def test_label_summary_and_rekeyed_copy(tmp_path):
    from detgym.envs.sample_select.lookup import label_summary

    key = label_summary([np.array([1, 1, 3]), np.array([], dtype=np.int64), np.array([10])], 10)
    assert key.tolist() == pytest.approx(np.log1p([2, 0, 1, 0, 0, 0, 0, 0, 0, 1]).tolist())
    table = _table(tmp_path / "t.npz", [(1, (0.0, 0.0), 0.2), (1, (3.0, 0.0), 0.4)])
    copy = table.rekeyed([np.array([1.0]), np.array([2.0])])
    assert copy.estimate(0, 1, np.array([1.0]), refuse=False).value == pytest.approx(0.2)
    assert table.features[0].tolist() == [0.0, 0.0] and copy.maps == table.maps
    copy.add(0, 1, np.array([5.0]), 0.9)
    assert len(table) == 2 and len(copy) == 3  # the copy's records are its own
    with pytest.raises(ValueError, match="one feature per record"):
        table.rekeyed([np.zeros(1)])


def test_pool_preset_keys_records_on_the_labeled_sets_labels(kw, tmp_path):
    from detgym.envs.sample_select.lookup import label_summary

    table = build_table("test-pool", episodes=1, path=tmp_path / "pool.npz", progress=False, **kw)
    env = DetSampleSelectEnv("test-pool", **kw)
    c = env.train_set.num_classes
    for k, sel, feature in zip(table.set_ids, table.selections, table.features):
        labeled = np.union1d(env.initial_sets[k], sel)
        labels = [env.train_set.targets[i]["labels"].numpy() for i in labeled]
        assert feature.tolist() == label_summary(labels, c).tolist()
        ref = env.reference(k).features
        assert np.allclose(env.summary_of(k, sel, "embedding"), ref[sel].mean(axis=0), atol=1e-6)
    assert [sel.size for sel in table.selections] == [2, 4]  # every cycle adds batch = 2 images
    with pytest.raises(ValueError, match="kind must be one of"):
        env.summary_of(0, table.selections[0], "colour")
    env.close()
