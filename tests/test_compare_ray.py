"""``detgym compare --backend ray``: a two-run grid as Ray tasks on a local Ray instance (skipped without Ray)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from detgym.compare import cli as compare  # noqa: E402
from detgym.compare.store import read_runs  # noqa: E402


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        # set before ray.init: the Ray workers inherit the environment of the instance
        mp.setenv("DETGYM_CACHE", str(tmp_path_factory.mktemp("ray-cache")))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
        ray.shutdown()


def test_two_run_grid_as_ray_tasks_resumes_and_replays(local_ray, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["--backend", "ray", "--env", "DetLossWeight-Test-v0", "--env-kwargs", '{"iterations": 8}',
            "--agents", "uniform,avw", "--seeds", "1", "--workers", "2", "--out", str(out), "--no-progress",
            "--resamples", "200"]
    assert compare.main(argv) == 0
    records = read_runs(out / "runs.jsonl").records
    assert len(records) == 2 and {r["agent"]["name"] for r in records.values()} == {"uniform", "avw"}
    assert all(r["host"] and r["episodes"][0]["final_metrics"] is not None for r in records.values())
    assert ray.is_initialized()  # an instance the harness did not start is left running
    before = (out / "runs.jsonl").read_bytes()
    assert compare.main(argv) == 0 and (out / "runs.jsonl").read_bytes() == before  # resumed: nothing to run
    assert "2 already in" in capsys.readouterr().out
    assert compare.run_replay(compare.argparse.Namespace(runs=str(out / "runs.jsonl"), run=None)) == 0
