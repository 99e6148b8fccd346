"""Where one training iteration of each tiny detector spends its time.

One ``Trainer.step`` of retinanet-tiny, fcos-tiny and fasterrcnn-tiny (digits at 128 px, batch 8, AdamW, grad
clip 10: the recipes' settings) is split into

* ``data``: the minibatch (uint8 -> float images, target dicts),
* ``forward``: transform (normalise, batch), backbone + FPN, heads (RPN head, RoI pooling, box head, predictor),
* ``anchors``: anchor / location generation,
* ``matching``: assigning anchors / locations / proposals to ground truth (IoU matrix, Matcher, FCOS centre
  sampling, RPN proposal filtering and sampling of RoIs),
* ``loss``: the per-level loss terms from the matches,
* ``backward``, ``optimizer`` (zero_grad, grad-norm clipping, AdamW),
* ``overhead``: everything else inside ``Trainer.step`` (target checks, Python glue of torchvision's forward,
  stacking the per-level losses, host copies), i.e. the step's wall time minus the sections above.

The sections are timed with manual timers around the methods that implement them (nested sections counted once,
in the innermost), on the process's CPU clock (``time.process_time``: on a shared machine other processes do not
count; with 2 threads it includes OpenMP's spin-waiting), and cross-checked with ``torch.profiler``: the same
methods open ``record_function`` ranges, and the profiler's own exclusive (wall) time per range is printed beside
the manual figure (the profiler slows every op down, so compare shares, not milliseconds). The profiler's top
operators by self CPU time are printed for each run.

``--compare`` measures the optimised training path against the previous one (torchvision's per-image matching,
anchors regenerated every iteration, per-iteration host syncs) on the same model, batches and thread count,
alternating blocks (ABBA) so that load drifts cancel; it also checks that both give the same losses.

    python -m benchmarks.profile_step                       # every tiny family, 1 and 2 threads
    python -m benchmarks.profile_step --recipes retinanet-tiny --threads 1 --iters 10
    python -m benchmarks.profile_step --compare             # old path vs new path, side by side
    python -m benchmarks.profile_step --path previous       # the table of the path from before the fast paths

Results are written atomically to ``runs/profile_step.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from detgym.data import DigitsConfig, digits_dataset
from detgym.data.io import atomic_write_json
from detgym.train import Trainer, get_recipe

# ---------------------------------------------------------------------------------------------- settings
RECIPES = ("retinanet-tiny", "fcos-tiny", "fasterrcnn-tiny")
THREADS = (1, 2)
IMAGE_SIZE = 128
BATCH_SIZE = 8
TRAIN_IMAGES = 256  # the first images of the default digits train split
WARMUP = 5  # untimed iterations (allocator, lazy set-ups)
ITERS = 20  # timed iterations per (recipe, threads)
PROFILED_ITERS = 5  # iterations under torch.profiler (cross-check)
TOP_OPS = 12
SECTIONS = ("data", "forward", "anchors", "matching", "loss", "backward", "optimizer", "overhead")
OUT = Path("runs/profile_step.json")
CLOCK = time.process_time  # CPU seconds of this process (all its threads)


# ---------------------------------------------------------------------------------------------- timers
class SectionTimer:
    """Exclusive wall time per section: a section nested in another is charged to the inner one only."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [section, start, time spent in nested sections]

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        with torch.profiler.record_function(f"section::{name}"):
            entry = [name, CLOCK(), 0.0]
            self._stack.append(entry)
            try:
                yield
            finally:
                self._stack.pop()
                spent = CLOCK() - entry[1]
                self.totals[name] += spent - entry[2]
                if self._stack:
                    self._stack[-1][2] += spent

    def wrap(self, obj: Any, attr: str, name: str) -> Callable[[], None]:
        """Time ``obj.attr`` (a method, or a module's forward) as section ``name``; returns the undo function."""
        original = getattr(obj, attr)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.section(name):
                return original(*args, **kwargs)

        had_own = attr in vars(obj)
        setattr(obj, attr, timed)
        return (lambda: setattr(obj, attr, original)) if had_own else (lambda: delattr(obj, attr))


def _targets(trainer: Trainer) -> list[tuple[Any, str, str]]:
    """(object, attribute, section) of every method timed for this trainer's detector."""
    model = trainer.model
    out: list[tuple[Any, str, str]] = [
        (trainer.train_set, "batch", "data"),
        (model.transform, "forward", "forward"),
        (model.backbone, "forward", "forward"),
        (trainer.optimizer, "step", "optimizer"),
        (trainer.optimizer, "zero_grad", "optimizer"),
    ]
    if hasattr(model, "rpn"):  # Faster R-CNN
        rpn, roi = model.rpn, model.roi_heads
        out += [
            (rpn.head, "forward", "forward"),
            (rpn.anchor_generator, "forward", "anchors"),
            (rpn, "filter_proposals", "matching"),
            (rpn, "assign_targets_to_anchors", "matching"),
            (rpn.box_coder, "encode", "matching"),
            (rpn, "compute_loss", "loss"),
            (roi, "forward", "loss"),  # exclusive part: the RoI loss terms and their levels
            (roi, "select_training_samples", "matching"),
            (roi.box_roi_pool, "forward", "forward"),
            (roi.box_head, "forward", "forward"),
            (roi.box_predictor, "forward", "forward"),
        ]
    else:  # RetinaNet / FCOS: match_targets (torchvision's path: the detector's compute_loss matches, then calls
        # the head's compute_loss, which is timed as loss inside it)
        out += [
            (model.head, "forward", "forward"),
            (model.anchor_generator, "forward", "anchors"),
            (model, "match_targets", "matching"),
            (model, "compute_loss", "matching"),
            (model.head, "compute_loss", "loss"),
        ]
    return out


@contextlib.contextmanager
def instrumented(trainer: Trainer, timer: SectionTimer) -> Iterator[None]:
    """Time the sections of ``trainer.step`` (backward and grad clipping through torch's module functions)."""
    undo = [timer.wrap(obj, attr, name) for obj, attr, name in _targets(trainer)]
    undo.append(timer.wrap(torch.autograd, "backward", "backward"))
    undo.append(timer.wrap(torch.nn.utils, "clip_grad_norm_", "optimizer"))
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()


# ---------------------------------------------------------------------------------------------- runs
def make_trainer(recipe_name: str, train: Any, seed: int = 0) -> Trainer:
    recipe = get_recipe(recipe_name)
    config = recipe.train.replace(device="cpu", batch_size=BATCH_SIZE, seed=seed, iterations=10_000)
    torch.manual_seed(seed)
    return Trainer(recipe.build_model(train.num_classes), train, config=config)


def time_sections(trainer: Trainer, iters: int) -> dict[str, float]:
    """Mean ms per iteration of every section (``overhead`` = step wall time minus the others)."""
    timer = SectionTimer()
    with instrumented(trainer, timer):
        start = CLOCK()
        for _ in range(iters):
            trainer.step()
        spent = CLOCK() - start
    ms = {k: 1e3 * timer.totals.get(k, 0.0) / iters for k in SECTIONS if k != "overhead"}
    ms["overhead"] = 1e3 * spent / iters - sum(ms.values())
    ms["total"] = 1e3 * spent / iters
    return ms


def profiler_sections(trainer: Trainer, iters: int) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """The same split from torch.profiler's own clock (exclusive time per range), and the top ops by self CPU."""
    timer = SectionTimer()
    with instrumented(trainer, timer), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.profiler.record_function("section::step_total"):
            for _ in range(iters):
                trainer.step()
    events = prof.events()
    exclusive: dict[str, float] = defaultdict(float)

    def nearest_sections(ev: Any) -> list[Any]:
        found = []
        for child in ev.cpu_children:
            found += [child] if child.name.startswith("section::") else nearest_sections(child)
        return found

    for ev in events:
        if ev.name.startswith("section::"):
            inner = sum(c.cpu_time_total for c in nearest_sections(ev))
            exclusive[ev.name.removeprefix("section::")] += (ev.cpu_time_total - inner) / 1e3 / iters
    ms = {k: exclusive.get(k, 0.0) for k in SECTIONS if k != "overhead"}
    ms["overhead"] = exclusive.get("step_total", 0.0)  # step time outside every section
    ms["total"] = sum(ms.values())
    ops = [(e.key, e.self_cpu_time_total / 1e3 / iters) for e in prof.key_averages()
           if not e.key.startswith("section::")]
    ops.sort(key=lambda kv: -kv[1])
    return ms, ops[:TOP_OPS]


def use_previous_path(trainer: Trainer) -> None:
    """Put ``trainer`` back on the training path from before the fast paths, in place.

    torchvision's per-image matching (its ``compute_loss`` / ``assign_targets_to_anchors``), anchors regenerated
    every iteration, torchvision's transform (per-image normalise and identity resize), the dense detectors'
    loss through torchvision's ``forward``, and the per-parameter optimizer loop.
    """
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.rpn import RegionProposalNetwork
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from detgym.models._utils import LevelLossMixin

    model = trainer.model
    model.transform.__class__ = GeneralizedRCNNTransform
    if hasattr(model, "rpn"):
        model.rpn.anchor_generator.__class__ = AnchorGenerator
        model.rpn.assign_targets_to_anchors = types.MethodType(RegionProposalNetwork.assign_targets_to_anchors,
                                                               model.rpn)
    else:
        model.anchor_generator.__class__ = AnchorGenerator
        base = RetinaNet if isinstance(model, RetinaNet) else FCOS
        model.compute_loss = types.MethodType(base.compute_loss, model)
        model.level_losses = types.MethodType(LevelLossMixin.level_losses, model)
    for group in trainer.optimizer.param_groups:
        group["foreach"] = False


def compare_paths(recipe: str, train: Any, iters: int, blocks: int) -> dict[str, Any]:
    """CPU ms per iteration of the previous and the current training path on twin trainers (same weights, batches),
    in alternating blocks (ABBA); also whether every iteration's per-level losses are bit-identical."""
    old, new = make_trainer(recipe, train), make_trainer(recipe, train)
    use_previous_path(old)
    identical = True
    for _ in range(WARMUP):
        identical &= np.array_equal(old.step().level_losses, new.step().level_losses)
    spent = {"old": 0.0, "new": 0.0}
    for b in range(blocks):
        for name in (("old", "new") if b % 2 == 0 else ("new", "old")):
            trainer = old if name == "old" else new
            start = CLOCK()
            losses = [trainer.step().level_losses for _ in range(iters)]
            spent[name] += CLOCK() - start
            if name == "old":
                reference = losses
            else:
                latest = losses
        identical &= all(np.array_equal(a, b_) for a, b_ in zip(reference, latest))
    n = iters * blocks
    res = {"recipe": recipe, "threads": torch.get_num_threads(), "old_ms": 1e3 * spent["old"] / n,
           "new_ms": 1e3 * spent["new"] / n, "losses_identical": bool(identical)}
    res["speedup"] = res["old_ms"] / res["new_ms"]
    print(f"{recipe} ({res['threads']} thr): previous path {res['old_ms']:.1f} ms/it, current {res['new_ms']:.1f} "
          f"ms/it, speedup {res['speedup']:.3f}, losses {'bit-identical' if identical else 'DIFFER'}", flush=True)
    return res


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'recipe':<16}{'thr':>4} {'source':<9}" + "".join(f"{s:>10}" for s in SECTIONS) + f"{'total':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        for source in ("manual", "profiler"):
            ms = r[source]
            cells = "".join(f"{ms[s]:>10.2f}" for s in SECTIONS)
            print(f"{r['recipe']:<16}{r['threads']:>4} {source:<9}{cells}{ms['total']:>10.2f}")
        share = "".join(f"{100 * r['manual'][s] / r['manual']['total']:>9.1f}%" for s in SECTIONS)
        print(f"{'':<20} {'share':<9}{share}")
    print("(CPU ms per iteration; the profiler's wall times are inflated by its own instrumentation and by other "
          "load: compare shares)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    p.add_argument("--threads", nargs="+", type=int, default=list(THREADS))
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--compare", action="store_true", help="old training path vs the new one, side by side")
    p.add_argument("--path", choices=("current", "previous"), default="current",
                   help="profile the current training path or the one from before the fast paths")
    p.add_argument("--blocks", type=int, default=6, help="--compare: alternating blocks of --iters iterations")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)

    train = digits_dataset("train", config=DigitsConfig(image_size=IMAGE_SIZE)).subset(range(TRAIN_IMAGES))
    settings = {"recipes": args.recipes, "threads": args.threads, "iters": args.iters, "image_size": IMAGE_SIZE,
                "path": args.path,
                "batch_size": BATCH_SIZE, "warmup": WARMUP, "profiled_iters": PROFILED_ITERS,
                "torch": torch.__version__}
    if args.compare:
        results = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            results += [compare_paths(r, train, args.iters, args.blocks) for r in args.recipes]
        print()
        print(f"{'recipe':<16}{'thr':>4}{'old ms/it':>11}{'new ms/it':>11}{'speedup':>9}  losses")
        for r in results:
            print(f"{r['recipe']:<16}{r['threads']:>4}{r['old_ms']:>11.1f}{r['new_ms']:>11.1f}{r['speedup']:>9.3f}  "
                  f"{'bit-identical' if r['losses_identical'] else 'DIFFER'}")
        atomic_write_json(args.out.with_name(args.out.stem + "_compare.json"), {"settings": settings,
                                                                                 "results": results})
        return 0

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for recipe in args.recipes:
            trainer = make_trainer(recipe, train)
            if args.path == "previous":
                use_previous_path(trainer)
            for _ in range(WARMUP):
                trainer.step()
            manual = time_sections(trainer, args.iters)
            prof, ops = profiler_sections(trainer, PROFILED_ITERS)
            rows.append({"recipe": recipe, "threads": threads, "path": args.path, "manual": manual, "profiler": prof,
                         "top_ops": ops})
            print(f"{recipe} ({threads} thread{'s' * (threads > 1)}): {manual['total']:.1f} ms/it; top ops by "
                  "self CPU (profiler, ms/it): " + ", ".join(f"{k} {v:.2f}" for k, v in ops))
    print()
    print_table(rows)
    atomic_write_json(args.out, {"settings": settings, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
