"""Table 1 of paper 001 on the digits set: standard fine-tuning vs the policy-gradient detector (gamma = 0, 1), with
the paper's per-image AP reward and with DetBoxSelect-v1's pool reward (the batch as the pool).

From the same trained detector (the DetBoxSelect preset's cached Faster R-CNN, so the env and this table share it),
every method fine-tunes for the same iterations with the same optimiser, schedule and seed (paper 001, sec. 4.1:
10x lower learning rate, divided by 10 after 2/3 of the iterations), and is tested with greedy NMS (the detector's
own post-processing, IoU 0.5) and with soft-NMS on the same candidates. Every (method, seed) run is paired: the same
seed gives the same batch order. Per row: AP, AP50, AP75, APs, APm, APl on the test split, mean with a 95%
bootstrap CI (``scipy.stats.bootstrap``, percentile) over seeds, and the paired difference to "standard + greedy
NMS" with its CI. Results go to a JSON file after each run (atomic; finished runs are skipped on restart), the
summary to CSV and PNG.

    python -m benchmarks.table1_pg_detector                          # default CPU preset, 5 seeds
    python -m benchmarks.table1_pg_detector --seeds 0 1 2 --workers 2 --out runs/table1_3seeds.json
    python -m benchmarks.table1_pg_detector --preset test --seeds 0 1 --iterations 5 --out /tmp/t1.json  # seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from detgym.compare.plots import grouped_bars
from detgym.data.io import atomic_write_csv, atomic_write_json

#: Stats of table 1.
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: Fine-tuning methods: name -> PG settings (None: standard cross-entropy fine-tuning). The paper's reward (the
#: image's AP, eq. 5) and DetBoxSelect-v1's pool reward with the batch as the pool (``PGConfig.reward``).
METHODS: dict[str, dict[str, Any] | None] = {
    "standard": None,
    "pg_gamma0": {"gamma": 0.0},
    "pg_gamma1": {"gamma": 1.0},
    "pg_gamma0_pool": {"gamma": 0.0, "reward": "pool_ap"},
    "pg_gamma1_pool": {"gamma": 1.0, "reward": "pool_ap"},
}
#: Post-processings of the candidates; the oracle (per GT box its best same-class candidate) marks the headroom.
POSTPROCESS = ("greedy_nms", "soft_nms", "oracle")
REFERENCE = ("standard", "greedy_nms")


@dataclass
class Settings:
    """Everything a run depends on (saved with the results; a changed setting starts a new results file)."""

    preset: str = "default"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    #: Fine-tuning iterations per method (paper 001: 22.5k after 80k; here 20% of the tiny recipe's 750).
    iterations: int = 150
    #: Fine-tuning learning rate = recipe lr * lr_factor (paper: 0.001 after 0.01), / 10 after 2/3 of the run.
    lr_factor: float = 0.1
    #: Keep-sets per image and the r(b) estimator of the PG methods.
    k: int = 10
    estimator: str = "conditional"
    #: Soft-NMS variant of the soft-NMS column.
    soft_nms: str = "soft_nms_gaussian"
    split: str = "test"
    bootstrap: int = 10_000


# ---------------------------------------------------------------------------------------------- one run
def _substrate(preset: str):
    from detgym.envs.box_select import PRESETS
    from detgym.envs.substrate import LoadedSubstrate

    config = PRESETS.get_preset(preset)
    config.validate()
    return config, LoadedSubstrate(config)


def evaluate(model: Any, dataset: Any, soft_rule: str, batch_size: int) -> dict[str, dict[str, float]]:
    """COCO stats of ``model`` on ``dataset`` with greedy NMS (its own post-processing), soft-NMS and the
    ground-truth oracle, all from one pass of candidates."""
    import torch

    from detgym.agents.nms import coco_detections, postprocess
    from detgym.metrics import coco_evaluate

    device = next(model.parameters()).device
    nms, cands = [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            images, _ = dataset.batch(range(start, min(start + batch_size, len(dataset))), device=device)
            batch = model.candidates(images)
            nms += [{k: v.cpu().numpy() for k, v in d.items()} for d in model.postprocess(batch)]
            cands += [{k: c[k].double().cpu().numpy() if k != "labels" else c[k].cpu().numpy()
                       for k in ("boxes", "scores", "labels")} for c in batch]
    for c, target in zip(cands, dataset.targets):
        c.update(gt_boxes=target["boxes"].double().numpy(), gt_labels=target["labels"].numpy())
    gt, ids, l2c = dataset.coco_gt(), list(dataset.image_ids), dataset.label_to_category_id
    return {"greedy_nms": coco_evaluate(gt, coco_detections(nms, ids, l2c)),
            "soft_nms": coco_evaluate(gt, coco_detections(postprocess(cands, soft_rule), ids, l2c)),
            "oracle": coco_evaluate(gt, coco_detections(postprocess(cands, "oracle"), ids, l2c))}


def run_one(settings: dict[str, Any], method: str, seed: int | None, threads: int | None = None) -> dict[str, Any]:
    """Fine-tune the preset's trained detector with ``method`` and ``seed`` (``method="trained"``: no fine-tuning)
    and evaluate it; a JSON-able record."""
    import torch

    from detgym.agents.pg_detector import PGConfig, PolicyGradientDetector
    from detgym.envs.box_select.candidates import load_detector
    from detgym.train import Trainer

    if threads:
        torch.set_num_threads(threads)
    s = Settings(**settings)
    config, substrate = _substrate(s.preset)
    base = load_detector(config, substrate, progress=False)
    t0 = time.perf_counter()
    seconds_per_it = None
    model = base
    if method != "trained":
        model = copy.deepcopy(base).train()
        pg = METHODS[method]
        wrapped = model if pg is None else PolicyGradientDetector(model, PGConfig(k=s.k, estimator=s.estimator, **pg))
        cfg = substrate.train_config
        trainer = Trainer(wrapped, substrate.train_set, substrate.val_set, cfg.replace(
            seed=seed, iterations=s.iterations, lr=cfg.lr * s.lr_factor, warmup_iters=0, schedule="multistep",
            milestones=(2 / 3,), gamma=0.1))
        start = time.perf_counter()
        trainer.fit(progress=False)
        seconds_per_it = (time.perf_counter() - start) / s.iterations
    stats = evaluate(model, substrate.split(s.split), s.soft_nms, int(substrate.train_config.eval_batch_size))
    return {"method": method, "seed": seed, "stats": stats, "seconds_per_iteration": seconds_per_it,
            "wall_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------- statistics
def mean_ci(values: np.ndarray, n_boot: int) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap CI (``scipy.stats.bootstrap``); NaN bounds with fewer than 2 values."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if values.size < 2 or np.all(values == values[0]):
        return float(values.mean()), float("nan"), float("nan")
    res = bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=n_boot, method="percentile",
                    random_state=0)
    return float(values.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(runs: list[dict], seeds: list[int], n_boot: int) -> list[dict[str, Any]]:
    """One row per (method, post-processing): mean / CI of every stat and the paired difference to the reference."""
    by = {(r["method"], r["seed"]): r for r in runs}
    rows = []
    trained = by.get(("trained", None))
    if trained is not None:
        for post in (p for p in POSTPROCESS if p in trained["stats"]):
            rows.append({"method": "trained (no fine-tuning)", "postprocess": post, "n": 1,
                         **{st: trained["stats"][post][st] for st in STATS}})
    ref = {s: by[(REFERENCE[0], s)]["stats"][REFERENCE[1]] for s in seeds if (REFERENCE[0], s) in by}
    for method in METHODS:
        for post in POSTPROCESS:
            # runs of an older version of this script have no oracle column
            have = [s for s in seeds if (method, s) in by and post in by[(method, s)]["stats"]]
            if not have:
                continue
            row: dict[str, Any] = {"method": method, "postprocess": post, "n": len(have)}
            for st in STATS:
                vals = np.array([by[(method, s)]["stats"][post][st] for s in have])
                row[st], row[f"{st}_lo"], row[f"{st}_hi"] = mean_ci(vals, n_boot)
                paired = [s for s in have if s in ref]
                if (method, post) != REFERENCE and paired:
                    diff = np.array([by[(method, s)]["stats"][post][st] - ref[s][st] for s in paired])
                    row[f"d{st}"], row[f"d{st}_lo"], row[f"d{st}_hi"] = mean_ci(diff, n_boot)
            row["s_per_it"] = float(np.mean([by[(method, s)]["seconds_per_iteration"] for s in have]))
            rows.append(row)
    return rows


def plot(path: Path, rows: list[dict], title: str) -> None:
    """AP / AP50 / AP75 per row with 95% CIs, as a grouped bar chart (PNG, atomic)."""
    series = {}
    for st in ("AP", "AP50", "AP75"):
        mean = np.array([r[st] for r in rows])
        lo = np.array([r.get(f"{st}_lo", np.nan) for r in rows])
        hi = np.array([r.get(f"{st}_hi", np.nan) for r in rows])
        series[st] = (mean, np.stack([mean - lo, hi - mean]))
    names = [f"{r['method']}\n{r['postprocess']}" for r in rows]
    grouped_bars(path, names, series, title, ylabel="test split (mean, 95% CI)", width=1.6, fontsize=7)


# --------------------------------------------------------------------------------------------------- main
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Settings()
    p.add_argument("--preset", default=defaults.preset, help="a DetBoxSelect preset (its cached detector)")
    p.add_argument("--seeds", nargs="+", type=int, default=defaults.seeds)
    p.add_argument("--iterations", type=int, default=defaults.iterations)
    p.add_argument("--lr-factor", type=float, default=defaults.lr_factor)
    p.add_argument("--k", type=int, default=defaults.k)
    p.add_argument("--estimator", default=defaults.estimator, choices=("conditional", "eq8"))
    p.add_argument("--soft-nms", default=defaults.soft_nms, choices=("soft_nms_linear", "soft_nms_gaussian"))
    p.add_argument("--split", default=defaults.split, choices=("train", "val", "test"))
    p.add_argument("--bootstrap", type=int, default=defaults.bootstrap)
    p.add_argument("--out", default="runs/table1_pg_detector.json", help="results JSON (resumable)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (each with --threads torch threads)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def _load_runs(out: Path, key: dict[str, Any]) -> dict[str, dict]:
    """Finished runs in ``out`` by ``"method|seed"``; a file of other settings is an error."""
    saved = json.loads(out.read_text()) if out.exists() else {}
    if saved and saved.get("settings") != key:
        raise SystemExit(f"{out} holds runs of other settings {saved.get('settings')}; choose another --out")
    return {f"{r['method']}|{r['seed']}": r for r in saved.get("runs", [])}


def _run_all(todo: list[tuple[str, int | None]], settings: Settings, workers: int, threads: int,
             store: Callable[[dict], None]) -> None:
    """Run every (method, seed) of ``todo``, in this process or ``workers`` processes, storing each record."""
    from tqdm.auto import tqdm

    with tqdm(total=len(todo), desc="table 1", unit="run") as bar:
        if workers <= 1:
            for m, s in todo:
                bar.set_postfix(method=m, seed=s)
                store(run_one(asdict(settings), m, s, threads))
                bar.update(1)
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = [pool.submit(run_one, asdict(settings), m, s, threads) for m, s in todo]
                for f in as_completed(futures):
                    store(f.result())  # only the parent writes the file
                    bar.update(1)


def _print_summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Every row with its CIs and paired differences, and the PG methods' time per iteration over standard's."""
    print(f"\npreset={args.preset} seeds={args.seeds} iterations={args.iterations} split={args.split} "
          "(mean [95% bootstrap CI]; d = paired difference to standard + greedy NMS)")
    for r in rows:
        line = f"  {r['method']:>24} {r['postprocess']:>10} n={r['n']}"
        for st in STATS:
            line += f"  {st} {r[st]:.4f}"
            if f"{st}_lo" in r and np.isfinite(r[f"{st}_lo"]):
                line += f" [{r[f'{st}_lo']:.4f}, {r[f'{st}_hi']:.4f}]"
        print(line)
        if "dAP" in r:
            print(f"  {'':>24} {'':>10}      dAP {r['dAP']:+.4f} [{r['dAP_lo']:+.4f}, {r['dAP_hi']:+.4f}]  "
                  f"dAP50 {r['dAP50']:+.4f}  dAP75 {r['dAP75']:+.4f}  dAPs {r['dAPs']:+.4f}")
    timed = {r["method"]: r["s_per_it"] for r in rows if r.get("s_per_it")}
    if "standard" in timed:
        for m in [m for m in METHODS if m != "standard"]:
            if m in timed:
                print(f"  seconds per iteration {m} / standard: {timed[m] / timed['standard']:.3f}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = Settings(args.preset, list(args.seeds), args.iterations, args.lr_factor, args.k, args.estimator,
                        args.soft_nms, args.split, args.bootstrap)
    key = {k: v for k, v in asdict(settings).items() if k not in ("seeds", "bootstrap")}
    out = Path(args.out)
    runs = _load_runs(out, key)
    todo = [("trained", None)] + [(m, s) for s in args.seeds for m in METHODS]
    todo = [(m, s) for m, s in todo if f"{m}|{s}" not in runs]
    print(f"{len(runs)} runs in {out}, {len(todo)} to do; settings {key}")
    # the shared detector is trained (once, cached) before any worker starts
    from detgym.envs.box_select.candidates import load_detector

    config, substrate = _substrate(args.preset)
    load_detector(config, substrate, progress=True)

    def store(record: dict) -> None:
        runs[f"{record['method']}|{record['seed']}"] = record
        atomic_write_json(out, {"settings": key, "runs": list(runs.values())}, indent=1)

    t0 = time.perf_counter()
    _run_all(todo, settings, args.workers, args.threads, store)
    print(f"runs took {time.perf_counter() - t0:.0f} s")

    rows = summarize(list(runs.values()), args.seeds, args.bootstrap)
    _print_summary(rows, args)
    csv_path, png_path = out.with_suffix(".summary.csv"), out.with_suffix(".summary.png")
    atomic_write_csv(csv_path, rows)
    if rows:
        plot(png_path, rows, f"paper 001 table 1 on digits ({args.preset}, {len(args.seeds)} seeds, "
                             f"{args.iterations} it)")
    print(f"wrote {out}, {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
