"""benchmarks.lookup_speed: the table's speed-up and error, and the test-retest ceiling of its held-out selections."""

from __future__ import annotations

import json

from benchmarks import lookup_speed
from detgym.compare.store import read_runs


def test_retest_trains_the_held_out_selections_again_and_resumes(tmp_path, digits_cache):
    overrides = {"dataset_kwargs": {"cache_dir": str(digits_cache)}}
    argv = ["--preset", "test", "--initial-set", "-1", "--overrides", json.dumps(overrides), "--build-episodes", "4",
            "--heldout-episodes", "2", "--retest-episodes", "2", "--replay-episodes", "1", "--out", str(tmp_path)]
    result = lookup_speed.main(argv)
    (retest_file,) = tmp_path.glob("retest-*.jsonl")
    heldout = read_runs(next(tmp_path.glob("heldout-*.jsonl"))).records
    retest = read_runs(retest_file).records
    assert set(retest) == set(heldout)
    for key, episode in retest.items():  # the same images selected, other training seeds
        assert [c["added"] for c in episode["cycles"]] == [c["added"] for c in heldout[key]["cycles"]]
    assert result["retest"]["selections"] == result["heldout_selections"] == 4
    rho = result["retest"]["spearman_within_cycle"]
    assert rho is None or -1.0 <= rho <= 1.0
    # every key and estimator on the same selections, each also against the mean of the two measurements
    assert set(result["by_key"]) == {f"{k} {e}" for k in ("embedding", "labels", "counts")
                                     for e in ("neighbours", "ridge")}
    for errors in result["by_key"].values():
        for rho in (errors["spearman_within_cycle"], errors["spearman_within_cycle_vs_mean_of_two"]):
            assert rho is None or -1.0 <= rho <= 1.0
    assert result["retest"]["retraining_sd"] >= 0.0 and result["speedup"] > 1.0
    before = retest_file.read_bytes()
    assert lookup_speed.main(argv)["retest"] == result["retest"] and retest_file.read_bytes() == before  # resumed
