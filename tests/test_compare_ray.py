"""``detgym compare --backend ray``: a grid as Ray tasks on a local Ray instance, a user's agent given by import path
among them (skipped without Ray)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

import detgym.compare  # noqa: E402
from detgym import cli  # noqa: E402
from detgym.compare.store import read_runs  # noqa: E402

MINE = "tests.compare_user_agents:Alternate"


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        # set before ray.init: the Ray workers inherit the environment of the instance
        mp.setenv("DETGYM_CACHE", str(tmp_path_factory.mktemp("ray-cache")))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
        ray.shutdown()


def test_grid_as_ray_tasks_with_a_users_agent_resumes_and_replays(local_ray, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--backend", "ray", "--env", "DetLossWeight-Test-v0", "--env-kwargs", '{"iterations": 8}',
            "--agents", f"uniform,avw,{MINE}", "--seeds", "1", "--workers", "2", "--out", str(out), "--no-progress",
            "--resamples", "200"]
    assert cli.main(argv) == 0
    records = read_runs(out / "runs.jsonl").records
    assert len(records) == 3 and {r["agent"]["name"] for r in records.values()} == {"uniform", "avw", MINE}
    assert all(r["host"] and r["episodes"][0]["final_metrics"] is not None for r in records.values())
    assert next(r for r in records.values() if r["agent"]["name"] == MINE)["episodes"][0]["actions"] == [2, 0, 2]
    assert ray.is_initialized()  # an instance the harness did not start is left running
    before = (out / "runs.jsonl").read_bytes()
    assert cli.main(argv) == 0 and (out / "runs.jsonl").read_bytes() == before  # resumed: nothing to run
    assert "3 already in" in capsys.readouterr().out
    assert detgym.compare.replay(out / "runs.jsonl").reproduced
