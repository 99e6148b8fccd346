"""What ``detgym compare`` costs around its runs, and what a second worker process buys (targets: a grid with 2
workers >= 1.7x one on 2 cores; the harness adds < 2% to the runs' own time).

The same grid runs as ``python -m detgym compare``, side by side in one run, into fresh directories: with
``--workers 1`` (the runs in the command's own process), then the same command again (every run recorded: nothing
to run, so its wall time is the harness's fixed cost), then with ``--workers 2`` (two forkserver workers). Each
command is timed from outside, start to exit: interpreter start, imports, building each env once in the parent,
worker start-up, the progress bar, appending and fsyncing the records, statistics, table and plots are all in it.
Printed:

* speedup = wall(1 worker) / wall(2 workers);
* harness overhead = (wall(1 worker) - the runs' own time) / the runs' own time, where a run's own time is its
  ``wall_s`` (measured inside the run: env construction, training, evaluation); split into the fixed cost (the
  no-op re-run) and the rest, per run; with 2 workers, (2 wall - own) / own, which adds the time a worker waits
  idle for the other at the end of the grid;
* the machine's load: the 1-minute load average around each command and the runs' CPU share (CPU time / wall
  time). On a machine shared with other jobs (load above the core count, CPU share well under 1) wall-time
  ratios measure the neighbours, not the harness: the script says so.

    python -m benchmarks.compare_overhead                          # DetLossWeight-v0, 600 iterations, 8 runs
    python -m benchmarks.compare_overhead --iterations 100 --seeds 1 --out /tmp/overhead.json   # quicker

Results (every setting, walls, every run's own wall and CPU time, loads) are written atomically to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from detgym.compare.store import RUNS_FILE, read_runs
from detgym.data.io import atomic_write_bytes

#: The grid: every agent here is cheap to build, so the runs' own time is the env's (detector training).
ENV = "DetLossWeight-v0"
AGENTS = ("uniform", "avw", "a1", "a2")
SEEDS = 2
ITERATIONS = 600  # 30 steps of alpha = 20: about 30 s a run on an idle core, 4 minutes of runs in all
TARGET_SPEEDUP, TARGET_OVERHEAD = 1.7, 0.02


def run_grid(out: Path, workers: int, env: str, agents: str, seeds: int, iterations: int) -> dict:
    """One ``python -m detgym compare`` into ``out``: its wall time, the runs' own times, the load around it."""
    cmd = [sys.executable, "-m", "detgym", "compare", "--env", env, "--agents", agents, "--seeds", str(seeds),
           "--env-kwargs", json.dumps({"iterations": iterations}), "--workers", str(workers), "--out", str(out),
           "--no-progress"]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    records = list(read_runs(out / RUNS_FILE).records.values())
    return {"workers": workers, "wall_s": wall, "runs": len(records), "own_s": sum(r["wall_s"] for r in records),
            "cpu_s": sum(r["cpu_s"] for r in records), "run_wall_s": [r["wall_s"] for r in records],
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=ENV)
    p.add_argument("--agents", default=",".join(AGENTS))
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--iterations", type=int, default=ITERATIONS, help="training iterations per episode")
    p.add_argument("--out", default="runs/compare_overhead.json", help="results JSON")
    args = p.parse_args(argv)
    grid = (args.env, args.agents, args.seeds, args.iterations)

    with tempfile.TemporaryDirectory(prefix="compare-overhead-") as tmp:
        one = run_grid(Path(tmp) / "w1", 1, *grid)
        noop = run_grid(Path(tmp) / "w1", 1, *grid)  # everything recorded: the fixed cost alone
        two = run_grid(Path(tmp) / "w2", 2, *grid)
    speedup = one["wall_s"] / two["wall_s"]
    overhead_1 = (one["wall_s"] - one["own_s"]) / one["own_s"]
    per_run = (one["wall_s"] - one["own_s"] - noop["wall_s"]) / one["runs"]
    overhead_2 = (2 * two["wall_s"] - two["own_s"]) / two["own_s"]
    cores = os.cpu_count() or 1
    busy = max(r["load_before"] for r in (one, two)) > cores + 0.5 or min(
        r["cpu_s"] / r["own_s"] for r in (one, two)) < 0.8
    summary = {"env": args.env, "agents": args.agents, "seeds": args.seeds, "iterations": args.iterations,
               "cores": cores, "speedup_2_vs_1": speedup, "harness_overhead_1_worker": overhead_1,
               "fixed_cost_s": noop["wall_s"], "per_run_cost_s": per_run, "harness_overhead_2_workers": overhead_2,
               "machine_busy": busy, "results": [one, noop, two]}
    atomic_write_bytes(args.out, json.dumps(summary, indent=1).encode())

    print(f"grid: {args.env} (iterations {args.iterations}) x {args.agents} x {args.seeds} seeds = {one['runs']} runs")
    for name, r in (("1 worker ", one), ("2 workers", two)):
        print(f"  {name}: wall {r['wall_s']:7.1f} s   runs' own time {r['own_s']:7.1f} s (mean "
              f"{r['own_s'] / r['runs']:.1f} s a run, CPU share {r['cpu_s'] / r['own_s']:.2f})   load "
              f"{r['load_before']:.1f} -> {r['load_after']:.1f} on {cores} cores")
    print(f"speedup 2 workers vs 1:          {speedup:.2f}x   (target >= {TARGET_SPEEDUP}x)")
    print(f"harness overhead, 1 worker:      {100 * overhead_1:+.2f}%  (target < {100 * TARGET_OVERHEAD:.0f}%) = fixed "
          f"{noop['wall_s']:.1f} s (a re-run with nothing to do) + {per_run:+.2f} s a run")
    print(f"harness + idle tail, 2 workers:  {100 * overhead_2:+.2f}%")
    if busy:
        print("WARNING: the machine was busy with other jobs (load above the core count, or runs getting well under "
              "a whole core): these wall-time ratios measure the neighbours; re-run on a quiet machine")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
