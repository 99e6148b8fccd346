"""detgym compare / detgym replay on DetLossWeight-Test-v0 with tiny budgets: the Python API and the command line,
records, resume, replay, outputs, users' own agents and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import detgym.compare
from detgym import cli
from detgym.agents import AGENTS, register
from detgym.compare.store import read_runs

ENV = "DetLossWeight-Test-v0"
ENV_KWARGS = '{"iterations": 8}'  # 4 intervals of 2 iterations: 3 steps per episode
PPO_KWARGS = '{"ppo": {"n_steps": 8, "batch_size": 8}}'
SEEDS = 2


def _argv(out: Path, *extra: str, agents: str = "uniform,rlo,ppo") -> list[str]:
    return ["--env", ENV, "--env-kwargs", ENV_KWARGS, "--agents", agents, "--seeds", str(SEEDS),
            "--train-budget", "12", "--agent-kwargs", PPO_KWARGS, "--out", str(out), "--no-progress",
            "--resamples", "200", *extra]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETGYM_CACHE", str(tmp_path_factory.mktemp("compare-cache")))
        yield


def compare(argv: list[str]) -> int:
    return cli.main(["compare", *argv])


@pytest.fixture(scope="module")
def done(cache, tmp_path_factory):
    """A finished comparison through the Python API: uniform, RLO and a briefly trained PPO, 2 seeds, in this
    process."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    result = detgym.compare.run([ENV], ["uniform", "rlo", "ppo"], SEEDS, out=out, train_budget=12,
                                env_kwargs=json.loads(ENV_KWARGS), agent_kwargs=json.loads(PPO_KWARGS),
                                resamples=200, progress=False)
    assert result.ok and len(result.records) == 3 * SEEDS and result.outcome.finished == 3 * SEEDS
    assert [(r["agent"], r["AP_pairs"] if "AP_pairs" in r else None) for r in result.summary] == [
        ("uniform", None), ("rlo", SEEDS), ("ppo", SEEDS)]
    assert result.table.strip() == (out / "table.md").read_text().strip() and out / "scores.png" in result.paths
    return out


def _records(out: Path) -> list[dict]:
    read = read_runs(out / "runs.jsonl")
    assert not read.problems
    return list(read.records.values())


def test_every_run_is_recorded_with_its_config_seeds_actions_and_metrics(done):
    records = _records(done)
    assert len(records) == 3 * SEEDS
    for r in records:
        assert r["env"]["id"] == ENV and r["env"]["config"]["iterations"] == 8
        assert r["key"] == f"{ENV}/{r['env']['key']}/{r['agent']['name']}/{r['agent']['key']}/seed{r['seeds']['run']}"
        ep = r["episodes"][0]
        assert ep["seed"] == r["seeds"]["eval"][0] != r["seeds"]["train"]
        assert len(ep["actions"]) == len(ep["rewards"]) == 3 and ep["truncated"]
        assert set(ep["final_metrics"]) >= {"AP", "AP50"} and r["AP"] == ep["final_metrics"]["AP"]
        assert r["return"] == pytest.approx(sum(ep["rewards"]))
        assert r["versions"]["torch"] and r["versions"]["gymnasium"] and r["versions"]["stable-baselines3"]
        assert r["torch_threads"] == 1 and r["wall_s"] > 0
    by = {(r["agent"]["name"], r["seeds"]["run"]): r for r in records}
    for seed in range(SEEDS):  # paired: every agent meets the same evaluation episode of a seed
        assert len({by[a, seed]["seeds"]["eval"][0] for a in ("uniform", "rlo", "ppo")}) == 1
    assert by["uniform", 0]["seeds"]["eval"] != by["uniform", 1]["seeds"]["eval"]
    assert all(a == 3 for a in by["uniform", 0]["episodes"][0]["actions"])
    # RLO's probabilities at each decision, PPO's training episodes (learning curve, actions while training)
    probs = by["rlo", 0]["episodes"][0]["probs"]
    assert len(probs) == 3 and all(sum(p) == pytest.approx(1.0) for p in probs)
    train = by["ppo", 0]["train"]
    assert train["timesteps"] >= 12 and len(train["episodes"]) >= 3
    assert all(e["length"] == 3 and len(e["actions"]) == 3 for e in train["episodes"])
    assert by["uniform", 0]["train"] is None and by["ppo", 0]["agent"]["train_budget"] == 12


def test_outputs_table_csv_json_plots_and_tensorboard(done):
    table = (done / "table.md").read_text()
    assert "| DetLossWeight-Test-v0 | uniform (baseline) | 2 | AP |" in table and "| ppo | 2 |" in table
    summary = json.loads((done / "summary.json").read_text())
    rows = {r["agent"]: r for r in summary["rows"]}
    assert rows["rlo"]["AP_pairs"] == SEEDS and 0 <= rows["rlo"]["AP_poi"] <= 1 and "AP_diff" not in rows["uniform"]
    assert summary["settings"]["plan"][ENV]["baseline"] == "uniform"
    assert (done / "summary.csv").read_text().startswith("env,agent,baseline,runs")
    for name in ("scores.png", "learning_curves.png", "episode_curves.png", "action_frequencies.png"):
        assert (done / name).stat().st_size > 5000, name
    tb = done / "tb" / ENV
    assert any(p.name.startswith("events.out.tfevents") for p in tb.rglob("*"))
    assert any(p.parent.name.startswith("PPO") for p in tb.rglob("events.out.tfevents*"))  # SB3's own logs


def test_rerun_repeats_nothing(done, capsys):
    before = (done / "runs.jsonl").read_bytes()
    assert compare(_argv(done)) == 0
    assert (done / "runs.jsonl").read_bytes() == before
    assert f"{3 * SEEDS} already in" in capsys.readouterr().out


def test_replay_reproduces_every_run_exactly(done, capsys):
    assert cli.main(["replay", str(done / "runs.jsonl")]) == 0
    out = capsys.readouterr().out
    assert out.count("reproduced  ") == 3 * SEEDS and f"{3 * SEEDS} of {3 * SEEDS} run(s) reproduced exactly" in out


def test_replay_reports_a_changed_reward(done, tmp_path, capsys):
    records = _records(done)
    target = next(r for r in records if r["agent"]["name"] == "ppo")
    target["episodes"][0]["rewards"][1] += 2.0
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cli.main(["replay", str(path), "--run", target["key"]]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "episode 0" in out and "step 1: reward" in out and "0 of 1 run(s)" in out
    with pytest.raises(ValueError, match="matches no run"):
        detgym.compare.replay(path, run="nope")
    assert not detgym.compare.replay(path, run=target["key"]).reproduced


def test_a_truncated_last_line_is_reported_skipped_and_its_run_redone(done, tmp_path, capsys):
    out = tmp_path / "cmp"
    shutil.copytree(done, out, ignore=shutil.ignore_patterns("tb"))
    lines = (out / "runs.jsonl").read_bytes().splitlines(keepends=True)
    lost = json.loads(lines[-1])["key"]
    (out / "runs.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    assert compare(_argv(out)) == 0
    captured = capsys.readouterr()
    assert f"runs.jsonl:{len(lines)}: damaged line (truncated mid-write" in captured.err
    assert "1 to run" in captured.out
    read = read_runs(out / "runs.jsonl")
    assert len(read.records) == 3 * SEEDS and lost in read.records  # redone, appended after the fragment
    assert len(read.problems) == 1 and "not a run record" in read.problems[0]  # the fragment stays on its own line


def _error(argv: list[str], capsys) -> str:
    code = compare(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_before_any_run(done, tmp_path, capsys):
    out = tmp_path / "never"
    assert "unknown env 'DetNope-v0'; accepted: DetLossWeight-v0" in _error(
        ["--env", "DetNope-v0", "--agents", "uniform", "--out", str(out)], capsys)
    assert "--agents: unknown agent 'sac'; accepted: uniform" in _error(_argv(out, agents="uniform,sac"), capsys)
    # a user's agent by import path: a mistyped module or attribute names --agents and the path
    assert "--agents: agent 'tests.nope:Alternate': cannot import module 'tests.nope'" in _error(
        _argv(out, agents="uniform,tests.nope:Alternate"), capsys)
    assert "--agents: agent 'tests.compare_user_agents:Alternat': module 'tests.compare_user_agents' has no " \
           "attribute 'Alternat'" in _error(_argv(out, agents="tests.compare_user_agents:Alternat"), capsys)
    assert "agent 'stable_baselines3:SAC' does not fit DetLossWeight-Test-v0" in _error(
        _argv(out, agents="uniform,stable_baselines3:SAC"), capsys)
    assert "agent 'dqn' does not fit DetLossWeightContinuous-Test-v0; agents that fit: random, ppo" in _error(
        ["--env", "DetLossWeightContinuous-Test-v0", "--agents", "dqn", "--out", str(out)], capsys)
    ray_error = _error([*_argv(out), "--backend", "ray", "--ray-address", "127.0.0.1:1"], capsys)
    assert "--ray-address 127.0.0.1:1: no Ray cluster answers there" in ray_error or "needs Ray" in ray_error
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert f"--out {blocker / 'sub'} is not a writable directory" in _error(_argv(blocker / "sub"), capsys)
    # the same key prefix (env id, agent, seed) with another configuration is refused, not reused
    assert "holds runs of DetLossWeight-Test-v0 with another env configuration" in _error(
        [*_argv(done)[:2], "--env-kwargs", '{"iterations": 6}', *_argv(done)[4:]], capsys)
    assert "holds runs of ppo on DetLossWeight-Test-v0 with another agent configuration" in _error(
        [*_argv(done), "--train-budget", "13"], capsys)
    for option, value, message in (("--train-budget", "0", "--train-budget: must be an integer >= 1, got 0"),
                                   ("--seeds", "-1", "--seeds: must be an integer >= 1, got -1"),
                                   ("--threads", "0", "--threads: must be an integer >= 1, got 0"),
                                   ("--env-kwargs", "{", "--env-kwargs: not valid JSON")):
        with pytest.raises(SystemExit) as exc:
            compare([*_argv(out), option, value])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match="--threads must be an integer >= 1, got 0"):
        detgym.compare.run([ENV], ["uniform"], 1, out=out, threads=0)
    assert not out.exists()


def test_list_and_the_cli_verbs(cache, capsys):
    assert cli.main(["compare", "--list", "--env", "DetLossWeight-Test-v0,DetLossWeightContinuous-Test-v0"]) == 0
    out = capsys.readouterr().out
    assert "DetLossWeight-Test-v0: uniform, avw, rlo, a0, a1, a2, a3," in out and "ppo*" in out
    assert "DetLossWeightContinuous-Test-v0: random, ppo*, a2c*, recurrent_ppo*" in out
    assert cli.main(["replay", os.devnull + "-missing"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_box_select_runs_are_scored_over_all_their_evaluated_images(cache, tmp_path, capsys):
    """DetBoxSelect's episodes are single images: a run's AP is the COCO AP of its evaluated images together."""
    out = tmp_path / "box"
    argv = ["--env", "DetBoxSelect-Test-v0", "--agents", "nms,keep_all", "--seeds", "2", "--eval-episodes", "8",
            "--out", str(out), "--no-progress", "--resamples", "200"]
    assert compare(argv) == 0
    records = _records(out)
    assert len(records) == 4
    for r in records:
        metrics = r["dataset_metrics"]
        assert r["AP"] == metrics["AP"] and {"AP", "AP50", "AR100"} <= set(metrics)
        assert all(ep["final_metrics"] is None for ep in r["episodes"])
    assert "| DetBoxSelect-Test-v0 | nms (baseline) | 2 | AP |" in (out / "table.md").read_text()
    target = records[0]
    target["dataset_metrics"]["AP"] += 0.1
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    capsys.readouterr()
    assert cli.main(["replay", str(path)]) == 1
    out_text = capsys.readouterr().out
    assert "dataset metrics" in out_text and "3 of 4 run(s) reproduced exactly" in out_text


def test_users_agents_by_import_path_and_by_name_are_recorded_and_replayed(cache, tmp_path, capsys):
    path, bandit = "tests.compare_user_agents:Alternate", "tests.compare_user_agents.Bandit"
    register("const1", __import__("tests.compare_user_agents", fromlist=["x"]).build_constant)
    try:
        result = detgym.compare.run(ENV, ["uniform", path, bandit, "const1"], 1, out=tmp_path / "cmp",
                                    train_budget=6, env_kwargs={"iterations": 8}, agent_kwargs={path: {"first": 0}},
                                    resamples=200, progress=False)
    finally:
        AGENTS.pop("const1")
    assert result.ok
    by = {r["agent"]["name"]: r for r in result.records}
    assert by[path]["agent"]["source"] == path and by[path]["episodes"][0]["actions"] == [0, 2, 0]
    assert by[bandit]["agent"]["learns"] and by[bandit]["train"]["timesteps"] >= 6
    assert by["const1"]["agent"]["source"] == "tests.compare_user_agents:build_constant"
    assert by["const1"]["episodes"][0]["actions"] == [1, 1, 1] and "source" not in by["uniform"]["agent"]
    # replayed in a process where "const1" is not registered: its builder is imported from the recorded source
    assert cli.main(["replay", str(tmp_path / "cmp" / "runs.jsonl")]) == 0
    assert "4 of 4 run(s) reproduced exactly" in capsys.readouterr().out
    lost = dict(by["const1"], agent={**by["const1"]["agent"], "source": "__main__:build_constant"})
    (tmp_path / "lost.jsonl").write_text(json.dumps(lost) + "\n")
    verdict = detgym.compare.replay(tmp_path / "lost.jsonl").results[0]
    assert not verdict.reproduced and "agent 'const1' was registered" in verdict.message
    assert "cannot import it again" in verdict.message


def test_an_sb3_algorithm_class_by_import_path(cache, tmp_path):
    agent = "sb3_contrib.TQC"
    result = detgym.compare.run("DetLossWeightContinuous-Test-v0", [agent, "random"], 1, out=tmp_path / "cmp",
                                train_budget=6, env_kwargs={"iterations": 8}, resamples=200, progress=False,
                                agent_kwargs={agent: {"buffer_size": 64, "learning_starts": 3, "batch_size": 4}})
    assert result.ok
    record = next(r for r in result.records if r["agent"]["name"] == agent)
    assert record["agent"]["learns"] and record["agent"]["source"] == agent and record["train"]["timesteps"] >= 6
    assert any(p.parent.name.startswith("TQC") for p in (tmp_path / "cmp" / "tb").rglob("events.out.tfevents*"))
    assert detgym.compare.replay(tmp_path / "cmp" / "runs.jsonl").reproduced


def test_a_registered_agent_workers_cannot_import_is_refused_before_any_run(cache, tmp_path):
    register("lam", lambda env, seed: None)
    try:
        with pytest.raises(ValueError, match="--agents: agent 'lam' was registered with a builder that worker "
                                             "processes cannot import .a lambda or closure."):
            detgym.compare.run(ENV, ["uniform", "lam"], 1, out=tmp_path / "never", workers=2,
                               env_kwargs={"iterations": 8})
    finally:
        AGENTS.pop("lam")
    assert not (tmp_path / "never").exists()


def test_defaults_and_the_training_env_come_from_the_env_class(cache, tmp_path, monkeypatch):
    from detgym.envs.base import CompareDefaults
    from detgym.envs.loss_weight import DetLossWeightEnv

    monkeypatch.setattr(DetLossWeightEnv, "compare_defaults", CompareDefaults(
        "uniform", ("uniform", "ppo"), train_budget=12, train_env_kwargs={"iterations": 12},
        eval_env_kwargs={"iterations": 8}))
    result = detgym.compare.run(ENV, None, 1, out=tmp_path / "cmp", agent_kwargs=json.loads(PPO_KWARGS),
                                resamples=200, progress=False)
    assert result.ok and result.plan.baselines == {ENV: "uniform"}
    by = {r["agent"]["name"]: r for r in result.records}
    assert by["ppo"]["env"]["kwargs"] == {"iterations": 8} and by["ppo"]["env"]["train"]["kwargs"] == {"iterations": 12}
    assert by["ppo"]["agent"]["train_budget"] == 12 and len(by["ppo"]["episodes"][0]["actions"]) == 3
    assert {e["length"] for e in by["ppo"]["train"]["episodes"]} == {5}  # trained in the 12-iteration env
    assert by["uniform"]["agent"]["key"] == "2f713057"  # a non-learner's key does not depend on the training env
    assert detgym.compare.replay(tmp_path / "cmp" / "runs.jsonl").reproduced


def _readme_agent() -> str:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    return readme.split("```python\n# my_selectors.py\n", 1)[1].split("```", 1)[0]


def test_the_readme_agent_runs_from_any_directory_with_two_workers_and_replays(cache, tmp_path):
    """``detgym compare`` finds an agent module in the current directory (as ``python -m`` does), its worker processes
    import it themselves, and ``python -m detgym replay`` reproduces the runs: all from outside the repository."""
    (tmp_path / "my_selectors.py").write_text(_readme_agent())
    script = Path(sys.executable).with_name("detgym")
    command = [str(script) if script.exists() else "detgym", "compare", "--env", ENV, "--env-kwargs", ENV_KWARGS,
               "--agents", "uniform,my_selectors:Alternate", "--seeds", "2", "--workers", "2", "--out", "out",
               "--no-progress", "--resamples", "200"]
    env = {**os.environ, "PYTHONPATH": ""}
    ran = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert "| my_selectors:Alternate | 2 | AP |" in ran.stdout
    replayed = subprocess.run([sys.executable, "-m", "detgym", "replay", "out/runs.jsonl"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
    assert replayed.returncode == 0 and "4 of 4 run(s) reproduced exactly" in replayed.stdout, replayed.stderr


def test_benchmark_tables_plot_through_grouped_bars(tmp_path):
    import matplotlib.pyplot as plt

    from benchmarks import box_select_learned, table1_pg_detector

    box_select_learned.plot(tmp_path / "learned.png", [
        {"row": "nms", "AP": 0.5, "AP_sd": 0.01, "mean_image_ap": 0.70, "mean_image_ap_sd": 0.02},
        {"row": "ppo", "AP": 0.3, "AP_sd": 0.02, "mean_image_ap": 0.72, "mean_image_ap_sd": 0.01}], "selectors")
    table1_pg_detector.plot(tmp_path / "table1.png", [  # a missing interval draws no error bar
        {"method": "standard", "postprocess": "nms", "AP": 0.50, "AP_lo": 0.48, "AP_hi": 0.52, "AP50": 0.7,
         "AP75": 0.5},
        {"method": "pg", "postprocess": "nms", "AP": 0.51, "AP50": 0.71, "AP75": 0.52}], "table 1")
    assert (tmp_path / "learned.png").stat().st_size > 5000 and (tmp_path / "table1.png").stat().st_size > 5000
    assert not plt.get_fignums()  # closed after saving


def test_episode_curves_are_the_mean_return_so_far_over_seeds(tmp_path):
    from detgym.compare import plots

    def record(agent, seed, episodes):
        return {"env": {"id": "E"}, "agent": {"name": agent}, "seed": seed,
                "episodes": [{"rewards": r} for r in episodes]}

    runs = [record("a", 0, [[0.1, 0.2, 0.3], [0.3, 0.0, 0.1]]), record("a", 1, [[0.0, 0.1, 0.1, 0.5]])]
    curves = plots._cumulative_returns(runs)  # seed 0: mean of its two episodes; steps cut to the shortest
    np.testing.assert_allclose(curves, [[0.2, 0.3, 0.5], [0.0, 0.1, 0.2]])
    assert plots.plot_episode_curves(runs, tmp_path / "curves.png", n_resamples=200) == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").stat().st_size > 5000
    one_step = [record("nms", 0, [[0.5], [0.2]])]  # DetBoxSelect: one decision per episode, nothing to draw
    assert plots._cumulative_returns(one_step) is None
    assert plots.plot_episode_curves(one_step, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
