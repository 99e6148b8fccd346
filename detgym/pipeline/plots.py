"""PNG plots of a run's history (paper 004, Fig. 4-5: train / val loss and val mAP per epoch).

Drawn with matplotlib's Agg backend (no display needed) and written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from detgym.data.io import atomic_savefig

__all__ = ["LOSS_TITLES", "plot_history"]

#: Readable titles of torchvision's loss terms (paper 004 groups them as Cls, Bbox and Anc = RPN).
LOSS_TITLES = {
    "total": "total loss",
    "loss_classifier": "cls (RoI head)",
    "loss_box_reg": "box (RoI head)",
    "loss_objectness": "RPN objectness",
    "loss_rpn_box_reg": "RPN box",
    "classification": "cls",
    "bbox_regression": "box",
    "bbox_ctrness": "centerness",
}


def _series(history: Sequence[dict[str, Any]], group: str, key: str) -> list[float]:
    return [float(h.get(group, {}).get(key, float("nan"))) for h in history]


def plot_history(
    history: Sequence[dict[str, Any]], out_dir: str | Path, *, aug_off_epoch: int | None = None
) -> list[Path]:
    """Write ``loss.png`` (train vs val, one panel per loss term + total) and ``map.png`` into ``out_dir``.

    ``aug_off_epoch`` (1-based epoch from which augmentation is off) is marked with a vertical line.
    Returns the written paths (none for an empty history).
    """
    if not history:
        return []
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    epochs = [int(h["epoch"]) for h in history]
    terms = ["total"] + [k for k in history[-1].get("train_loss", {}) if k != "total"]
    cols = min(3, len(terms))
    rows = (len(terms) + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    for k, term in enumerate(terms):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.plot(epochs, _series(history, "train_loss", term), "o-", label="train", ms=3)
        ax.plot(epochs, _series(history, "val_loss", term), "s--", label="val", ms=3)
        if aug_off_epoch is not None and aug_off_epoch <= epochs[-1]:
            ax.axvline(aug_off_epoch - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(LOSS_TITLES.get(term, term))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend()
    written = [_save(fig, out_dir / "loss.png")]

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for key, label in (("AP", "val AP (.50:.95)"), ("AP50", "val AP50")):
        ax.plot(epochs, _series(history, "val", key), "o-", label=label, ms=3)
    acc = [h.get("val_accuracy") for h in history]
    if any(a is not None for a in acc):
        ax.plot(epochs, [float("nan") if a is None else a for a in acc], "^-", label="val accuracy @0.5", ms=3)
    if aug_off_epoch is not None and aug_off_epoch <= epochs[-1]:
        ax.axvline(aug_off_epoch - 0.5, color="grey", lw=0.8, ls=":", label="augmentation off")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, out_dir / "map.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    return atomic_savefig(fig, path, dpi=90)
