"""``detgym find-threshold``: sweep the confidence threshold on the val split (paper 004, Find_threshold.py).

The detector runs once over the val split (with its own minimum score lowered to the sweep's start
when needed); then for every threshold t of the grid ``from, from + step, ..., <= to``:

* mAP (task 1): ``coco_evaluate`` of the detections with ``score >= t``;
* accuracy (task 2): sequence accuracy of the left-to-right strings of the detections with
  ``score >= t`` against the ground-truth strings (``"-1"`` on both sides for an image without digits).

The best threshold is the one with the highest accuracy (the paper's rule), ties broken by the higher
mAP (AP .50:.95), then by the lower threshold. It is stored in ``RUN_DIR/threshold.json`` (atomic) with
the whole table, and ``detgym predict`` uses it for ``pred.csv``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from detgym.data.io import atomic_write_json

from .run import RunDir, build_run_model, load_model_weights, score_threshold_of, set_score_threshold
from .strings import DetectionTable, ground_truth_strings

__all__ = ["threshold_grid", "sweep_thresholds", "pick_best", "format_table", "find_threshold"]


def threshold_grid(start: float, stop: float, step: float) -> np.ndarray:
    """``start, start + step, ...`` up to ``stop`` inclusive (rounded to 1e-9, so 0.45..0.9 by 0.01 has 46 values).

    Raises ValueError naming the option when the range is empty or a value is not in [0, 1].
    """
    for name, v in (("--from", start), ("--to", stop), ("--step", step)):
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"{name} = {v!r} is not a finite number")
    if not 0.0 <= start <= 1.0 or not 0.0 <= stop <= 1.0:
        raise ValueError(f"--from {start:g} and --to {stop:g} must lie in [0, 1] (detection scores)")
    if step <= 0:
        raise ValueError(f"--step = {step:g} is invalid; accepted: a number > 0")
    if stop < start:
        raise ValueError(f"the threshold range is empty: --from {start:g} is above --to {stop:g}")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    return np.round(start + step * np.arange(n), 9)


def sweep_thresholds(table: DetectionTable, gt: dict[str, Any], true_strings: dict[int, str],
                     names: dict[int, str], thresholds: Sequence[float]) -> list[dict[str, float]]:
    """One row per threshold: ``threshold``, ``AP``, ``AP50``, ``AP75``, ``accuracy``, ``detections``."""
    from detgym.metrics import coco_evaluate, sequence_accuracy

    rows = []
    for t in thresholds:
        t = float(t)
        kept = table.results(t)
        stats = coco_evaluate(gt, kept)
        acc = sequence_accuracy(table.strings(t, names), true_strings)
        rows.append({"threshold": t, "AP": float(stats["AP"]), "AP50": float(stats["AP50"]),
                     "AP75": float(stats["AP75"]), "accuracy": float(acc), "detections": len(kept)})
    return rows


def pick_best(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Highest accuracy; ties -> higher AP; then the lower threshold (rows come in increasing threshold)."""
    if not rows:
        raise ValueError("no thresholds were evaluated")
    best = rows[0]
    for r in rows[1:]:
        if (r["accuracy"], r["AP"]) > (best["accuracy"], best["AP"]):
            best = r
    return best


def format_table(rows: Sequence[dict[str, float]], best: dict[str, float] | None = None) -> str:
    """The sweep as a fixed-width text table (the best row marked with ``<-``)."""
    lines = [f"{'threshold':>9}  {'mAP':>7}  {'AP50':>7}  {'accuracy':>8}  {'dets':>6}"]
    for r in rows:
        mark = "  <- best" if best is not None and r["threshold"] == best["threshold"] else ""
        lines.append(f"{r['threshold']:>9.3f}  {r['AP']:>7.4f}  {r['AP50']:>7.4f}  {r['accuracy']:>8.4f}  "
                     f"{r['detections']:>6d}{mark}")
    return "\n".join(lines)


def find_threshold(
    run_dir: str,
    start: float = 0.45,
    stop: float = 0.9,
    step: float = 0.01,
    *,
    checkpoint: str = "best",
    device: str = "auto",
    batch_size: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Sweep the threshold on the run's val split, print the table, store the best in ``threshold.json``.

    Returns the stored record (``threshold``, ``accuracy``, ``AP``, ``AP50``, ``table``, ...).

    Raises:
        FileNotFoundError: the run directory, its config or its checkpoint is missing (naming the path).
        ValueError: an empty or invalid threshold range (naming the option), a broken run file.
    """
    from detgym.data import load_dataset
    from detgym.train import predict_coco, resolve_device

    grid = threshold_grid(start, stop, step)  # validate the options before any heavy work
    run = RunDir(run_dir)
    cfg = run.read_config()
    ckpt = run.checkpoint_path(checkpoint)
    val = load_dataset(cfg.data, "val")
    if len(val) == 0:
        raise ValueError(f"the val split of {cfg.data!r} is empty: nothing to choose a threshold on")
    dev = resolve_device(device)
    model = build_run_model(cfg, pretrained=False)
    meta = load_model_weights(model, ckpt, map_location="cpu")
    model.to(dev)
    if score_threshold_of(model) > float(grid[0]):
        set_score_threshold(model, float(grid[0]))
    names = cfg.class_names
    t0 = time.perf_counter()
    results = predict_coco(model, val, batch_size=batch_size or int(cfg.train.get("eval_batch_size", 16)), device=dev)
    dt = time.perf_counter() - t0
    table = DetectionTable(results, val.image_ids)
    rows = sweep_thresholds(table, val.coco_gt(), ground_truth_strings(val, names), names, grid)
    best = pick_best(rows)
    epoch = meta.get("epoch")
    log(f"{ckpt.name}{f' (epoch {epoch})' if epoch else ''} on the val split of {cfg.data!r}: {len(val)} images, "
        f"{len(results)} detections ({len(val) / max(dt, 1e-9):.1f} images/s)")
    log(format_table(rows, best))
    record = {
        "threshold": best["threshold"],
        "accuracy": best["accuracy"],
        "AP": best["AP"],
        "AP50": best["AP50"],
        "checkpoint": ckpt.name if ckpt.parent.resolve() == run.path.resolve() else str(ckpt),
        "epoch": epoch,
        "split": "val",
        "data": cfg.data,
        "sweep": {"from": float(start), "to": float(stop), "step": float(step)},
        "table": rows,
    }
    atomic_write_json(run.threshold_file, record, indent=1)
    log(f"best threshold {best['threshold']:.3f}: accuracy {best['accuracy']:.4f}, mAP {best['AP']:.4f} "
        f"(AP50 {best['AP50']:.4f}) -> {run.threshold_file}")
    return record
