"""``detgym predict``: run a trained detector over an image directory, write pred.json and pred.csv.

Outputs (paper 004, inference.py), each written atomically (temporary file, then rename), so an
interrupted run leaves either the previous file or none, never half of one:

* ``pred.json``: COCO results, a list of ``{"image_id", "bbox": [x, y, w, h], "score", "category_id"}``
  with every detection the detector returns (its own minimum score, 0.05 for torchvision's models):
  COCO mAP rewards low-score detections, so the chosen threshold is not applied here;
* ``pred.csv``: columns ``image_id,pred_label``, one row per image in increasing image id: the
  category names (digits) of the detections with ``score >=`` the run's threshold read left to right,
  or ``-1`` when there is none.

Images: every ``.png``, ``.jpg``, ``.jpeg`` (any case) file directly in the directory. Image ids:

1. ``--ann FILE`` (a COCO JSON listing ``images`` with ``id`` and ``file_name``): the id of each file by
   its name (the file name as listed, or its base name); a file the JSON does not list is an error;
2. otherwise ``DIR.json`` beside the directory (``test/`` + ``test.json``, the layout that
   ``detgym data digits`` writes), when it is a COCO JSON listing every image file;
3. otherwise, when every file name's stem is an integer (the paper's test set: ``1.png``, ``2.png``, ...),
   that integer;
4. otherwise 1..N in file-name order.

The threshold for pred.csv is ``--threshold`` if given, else the one stored by ``detgym find-threshold``,
else 0.5 (the paper's default before the sweep), with a note.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from detgym.data.io import atomic_write_bytes, atomic_write_json, read_image

from .run import RunDir, build_run_model, load_model_weights
from .strings import DetectionTable

__all__ = ["IMAGE_SUFFIXES", "PredictReport", "list_images", "assign_image_ids", "predict_directory"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_THRESHOLD = 0.5


@dataclass
class PredictReport:
    """What :func:`predict_directory` did."""

    images: int
    detections: int
    threshold: float
    threshold_source: str
    json_path: Path
    csv_path: Path
    seconds: float
    model_seconds: float
    id_source: str

    @property
    def images_per_s(self) -> float:
        """End-to-end throughput (decoding + model + post-processing)."""
        return self.images / max(self.seconds, 1e-9)

    @property
    def model_images_per_s(self) -> float:
        """Throughput of the detector's forward passes alone."""
        return self.images / max(self.model_seconds, 1e-9)


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(directory: str | os.PathLike[str]) -> list[Path]:
    """The image files (PNG / JPG) directly in ``directory``, in natural name order (2.png before 10.png)."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"--images directory not found: {d}")
    files = [p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"--images {d} holds no image files (accepted: {', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: _natural_key(p.name))


def assign_image_ids(files: Sequence[Path], ann: str | os.PathLike[str] | None = None) -> tuple[list[int], str]:
    """Image ids of ``files`` (see the module docstring) and where they came from."""
    if ann is not None:
        ann = Path(ann).expanduser()
        return _ids_from_ann(files, ann), f"ids from {ann.name}"
    if files:
        sibling = files[0].parent.with_name(files[0].parent.name + ".json")
        if sibling.is_file():
            try:
                ids, _ = assign_image_ids(files, sibling)
                return ids, f"ids from {sibling.name} beside the image directory"
            except ValueError:
                pass  # not a COCO file for these images: fall through to the file names
    stems = [f.stem for f in files]
    if all(re.fullmatch(r"\d+", s) for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems], "ids from the file names"
    return list(range(1, len(files) + 1)), "ids 1..N in file-name order"


def _ids_from_ann(files: Sequence[Path], ann: Path) -> list[int]:
    """The ids that the COCO JSON ``ann`` gives ``files`` by file name; each file must be listed once."""
    by_name = _ann_ids_by_name(ann)
    ids = []
    for f in files:
        if f.name not in by_name:
            raise ValueError(f"image file {f} is not listed in --ann {ann} (its 'images' file names)")
        ids.append(int(by_name[f.name]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"--ann {ann} gives two image files the same id")
    return ids


def _ann_ids_by_name(ann: Path) -> dict[str, int]:
    """File name (as listed, and its base name) -> image id, from the ``images`` of the COCO JSON ``ann``."""
    if not ann.is_file():
        raise FileNotFoundError(f"--ann annotation file not found: {ann}")
    try:
        data = json.loads(ann.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--ann {ann}: malformed JSON ({exc})") from exc
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"--ann {ann}: expected a COCO JSON object with an 'images' list")
    by_name: dict[str, int] = {}
    for k, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or isinstance(im.get("id"), bool) \
                or not isinstance(im.get("id"), int):
            raise ValueError(f"--ann {ann}: images[{k}] needs an integer 'id' and a string 'file_name'")
        by_name.setdefault(im["file_name"], im["id"])
        by_name.setdefault(Path(im["file_name"]).name, im["id"])
    return by_name


def _batches(files: Sequence[Path], batch_size: int, workers: int) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """Decoded image batches, read ahead by ``workers`` threads (PIL decodes without holding the GIL)."""
    spans = [(s, files[s : s + batch_size]) for s in range(0, len(files), batch_size)]
    if workers <= 0:
        for s, chunk in spans:
            yield s, [read_image(f) for f in chunk]
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [(s, [pool.submit(read_image, f) for f in chunk]) for s, chunk in spans[:2]]
        nxt = 2
        while pending:
            s, futs = pending.pop(0)
            if nxt < len(spans):
                ns, nchunk = spans[nxt]
                pending.append((ns, [pool.submit(read_image, f) for f in nchunk]))
                nxt += 1
            yield s, [f.result() for f in futs]


def _csv_threshold(run: RunDir, threshold: float | None, log: Callable[[str], None]) -> tuple[float, str]:
    """The threshold of pred.csv and where it came from: ``--threshold``, the run's stored one, or the default."""
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"--threshold = {threshold} is invalid; accepted: a number in [0, 1]")
        return float(threshold), "--threshold"
    stored = run.read_threshold()
    if stored is not None:
        return float(stored["threshold"]), f"stored in {run.threshold_file.name}"
    log(f"note: {run.path} has no stored threshold (run `detgym find-threshold --run {run.path}`); "
        f"pred.csv uses {DEFAULT_THRESHOLD}")
    return DEFAULT_THRESHOLD, "default"


def _pred_csv(results: list[dict[str, Any]], ids: Sequence[int], threshold: float, names: dict[int, str]) -> bytes:
    """pred.csv: ``image_id,pred_label`` per image in increasing id, the digits at ``threshold`` left to right."""
    strings = DetectionTable(results, ids).strings(threshold, names)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_id", "pred_label"])
    for iid in sorted(strings):
        w.writerow([iid, strings[iid]])
    return buf.getvalue().encode("utf-8")


def predict_directory(
    run_dir: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    ann: str | os.PathLike[str] | None = None,
    checkpoint: str = "best",
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> PredictReport:
    """Write ``out/pred.json`` and ``out/pred.csv`` for the images in ``images`` (see the module docstring).

    Raises:
        FileNotFoundError: the run, its checkpoint, the image directory or ``ann`` is missing (naming it).
        ValueError: an unreadable image file (naming it), a malformed ``ann``, a bad threshold.
    """
    from tqdm.auto import tqdm

    from detgym.train import predict_batches, resolve_device

    if batch_size < 1:
        raise ValueError(f"--batch-size = {batch_size} is invalid; accepted: an integer >= 1")
    run = RunDir(run_dir)
    cfg = run.read_config()
    ckpt = run.checkpoint_path(checkpoint)
    thr, source = _csv_threshold(run, threshold, log)
    files = list_images(images)
    ids, id_source = assign_image_ids(files, ann)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")

    dev = resolve_device(device)
    model = build_run_model(cfg, pretrained=False)
    load_model_weights(model, ckpt, map_location="cpu")
    model.to(dev).eval()
    c2name = cfg.class_names

    def batches() -> Iterator[tuple[list[int], list[torch.Tensor]]]:
        for start, imgs in _batches(files, batch_size, num_workers):
            yield ids[start : start + len(imgs)], [im.to(dev, non_blocking=True).float().div_(255.0) for im in imgs]

    t0 = time.perf_counter()
    model_s = 0.0
    with tqdm(total=len(files), desc="predict", unit="img", disable=not progress, leave=False,
              dynamic_ncols=True) as bar:

        def on_batch(n_images: int, seconds: float) -> None:
            nonlocal model_s
            model_s += seconds
            bar.update(n_images)

        results = predict_batches(model, batches(), cfg.label_to_category_id, on_batch=on_batch)
    elapsed = time.perf_counter() - t0

    csv_bytes = _pred_csv(results, ids, thr, c2name)
    out.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_json(out / "pred.json", results)
    csv_path = atomic_write_bytes(out / "pred.csv", csv_bytes)
    report = PredictReport(len(files), len(results), thr, source, json_path, csv_path, elapsed, model_s, id_source)
    log(f"{report.images} images ({id_source}), {report.detections} detections -> {json_path}; digit strings at "
        f"threshold {thr:.3f} ({source}) -> {csv_path}")
    log(f"throughput on {dev}: {report.images_per_s:.1f} images/s end to end, {report.model_images_per_s:.1f} "
        f"images/s in the detector (batch {batch_size})")
    return report
