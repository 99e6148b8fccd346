"""MGRAL's fast look-up table (section III-F of papers 002/003): measured mAPs of labeled sets, and estimates.

For each labeled-set size (active-learning cycle ``i``, ``initial_size + i * batch`` images) the table holds
*records*: a feature summary of a labeled set and the val mAP its detector measured. The summary is the mean of
the reference features Φ_k (the ``embed()`` vectors of the initial detector of initial set ``k``, fixed for the
whole table) over the images selected since the initial set ("the visual representations of the selected
batch"). Records are searched among those of the same initial set and cycle:

* distances ``d_j = ||s - s_j||_2`` (L2: the paper found it better than cosine similarity);
* threshold ``τ = mean - std`` of the pairwise distances between those records ("the mean feature distance
  minus one standard deviation");
* when the nearest record is farther than ``τ`` (so every record is), the estimate is refused: the caller trains
  for real and :meth:`LookupTable.add` s the measured record;
* otherwise the estimate is ``Σ_j w_j mAP_j / Σ_j w_j`` over the ``neighbours`` nearest records with
  ``w_j = 1 / d_j`` (a record at distance 0 is returned as it is).

``estimator="ridge"`` (not the paper's; detgym's option) replaces the last step: a ridge regression of mAP on the
summary, fitted to all records of the (initial set, cycle) with standardised columns (penalty
:data:`RIDGE_PENALTY`, intercept free), answers instead of the neighbours' average (same refusal rule). Each
record is one noisy retraining, about as noisy as the differences between selections of a cycle; a fit pools all
of them where the neighbours average five. Keyed on ``count_summary`` it is the estimate that ranked the
selections of a cycle best on DetSampleSelect-v1 (README).

The table also keeps, per initial set, the reference features of every train image and the initial detector's
mAP, so a look-up episode needs no detector at all until the table refuses an estimate.

Each record also keeps its selection (the train-split indices added since the initial set), so a table can be
keyed again on another summary of the same measured selections without training anything.

Storage: one ``.npz`` file of plain arrays plus a JSON header (``allow_pickle=False``: no pickle either way),
written whole through :func:`detgym.data.io.atomic_write_bytes` (a crash leaves the previous file). The header
holds the resolved configuration and its :meth:`~.presets.SampleSelectPreset.table_key`; a file built for
another configuration, a corrupt or truncated file, is refused with a one-line ValueError naming it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import secrets
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from detgym.data.io import atomic_write_bytes, file_lock

__all__ = ["ESTIMATORS", "Estimate", "LookupTable", "READ_FORMATS", "RIDGE_PENALTY", "Reference", "SOURCES",
           "TABLE_FORMAT", "count_summary", "label_summary"]

#: Version of the file layout written; a file of a version outside :data:`READ_FORMATS` is refused.
TABLE_FORMAT = 3
#: Layouts read: 2 (records without their selections) and 3.
READ_FORMATS: tuple[int, ...] = (2, 3)
#: The per-record lists of :class:`LookupTable`, in one order.
_RECORD_COLUMNS: tuple[str, ...] = ("set_ids", "cycles", "features", "maps", "sources", "episodes", "ids", "selections")
#: How a record was measured: by ``detgym build-table`` (random selections) or by a look-up env's fallback.
SOURCES: tuple[str, ...] = ("build", "fallback")


#: How an estimate is formed from the records of its (initial set, cycle): the paper's neighbours, or a ridge fit.
ESTIMATORS: tuple[str, ...] = ("neighbours", "ridge")
#: Penalty of ``estimator="ridge"`` on the standardised coefficients (the intercept is free).
RIDGE_PENALTY: float = 1.0


@dataclass(frozen=True)
class Estimate:
    """One look-up: the estimate (``None`` when the table refuses) and how it was formed."""

    value: float | None
    #: Row numbers of the records used (neighbours: nearest first; ridge: every record of the group); empty when
    #: refused.
    records: tuple[int, ...] = ()
    #: The neighbours' distances (empty for ridge).
    distances: tuple[float, ...] = ()
    #: Normalised weights of the neighbours (sum 1; empty for ridge).
    weights: tuple[float, ...] = ()
    #: ``mean - std`` of the pairwise record distances of this (initial set, cycle); NaN with < 2 records.
    threshold: float = float("nan")
    #: Distance to the nearest record of this (initial set, cycle) (inf when there is none).
    nearest: float = float("inf")
    #: How many records this (initial set, cycle) has.
    n_records: int = 0

    def info(self) -> dict[str, Any]:
        """JSON-able summary for an env's ``info``."""
        return {
            "estimate": self.value,
            "records": list(self.records),
            "distances": list(self.distances),
            "weights": list(self.weights),
            "threshold": self.threshold,
            "nearest": self.nearest,
            "n_records": self.n_records,
        }


@dataclass
class Reference:
    """What a table keeps per initial set k: Φ_k of every train image, the initial detector's statistics, its mAP."""

    features: np.ndarray  # [N, D] float32: Φ_k of every train image
    stats: np.ndarray  # [N, S] float32: detection statistics of the initial detector
    initial_map: float


@dataclass
class LookupTable:
    """Records ``(initial set, cycle, summary, mAP)`` of one configuration; see the module docstring.

    Build with :meth:`open` (creates an empty table or loads and checks an existing file); :meth:`save` writes it.
    """

    path: Path
    key: str
    config: dict[str, Any]
    references: dict[int, Reference] = field(default_factory=dict)
    set_ids: list[int] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    maps: list[float] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    episodes: list[int] = field(default_factory=list)
    #: A random 63-bit id per record: what :meth:`save` merges concurrent writers' records by.
    ids: list[int] = field(default_factory=list)
    #: Train-split indices each record's selection added to the initial set (empty: not recorded, format 2).
    selections: list[np.ndarray] = field(default_factory=list)
    #: Build episodes (``detgym build-table`` indices) whose records are all in the table.
    done: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._thresholds: dict[tuple[int, int], float] = {}

    # ------------------------------------------------------------------ files
    @classmethod
    def open(cls, path: str | os.PathLike, key: str, config: dict[str, Any]) -> "LookupTable":
        """The table at ``path`` (checked against ``key``), or a new empty one when the file does not exist."""
        path = Path(path)
        if not path.exists():
            return cls(path, key, dict(config))
        table = cls.load(path)
        if table.key != key:
            raise ValueError(
                f"lookup table {path} was built for another configuration (table_key {table.key}, this env "
                f"{key}); give another table_path or delete the file and run detgym build-table"
            )
        return table

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LookupTable":
        """Read a table file (any key). Raises ValueError naming the file when it is corrupt or truncated."""
        path = Path(path)
        try:
            with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            return cls._from_arrays(path, arrays)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(
                f"lookup table {path} is corrupt or truncated ({reason}); delete it and run detgym build-table again"
            ) from None

    @classmethod
    def _from_arrays(cls, path: Path, arrays: dict[str, np.ndarray]) -> "LookupTable":
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") not in READ_FORMATS:
            raise ValueError(f"file format {meta.get('format')!r}, this detgym reads formats {READ_FORMATS}")
        table = cls(path, str(meta["key"]), dict(meta["config"]), done={int(e) for e in meta["done"]})
        maps0 = arrays["ref_map"]
        for j, k in enumerate(arrays["ref_sets"].tolist()):
            feats, stats = arrays[f"ref_features_{k}"], arrays[f"ref_stats_{k}"]
            if feats.ndim != 2 or stats.shape[0] != feats.shape[0]:
                raise ValueError(f"reference arrays of initial set {k} have shapes {feats.shape} / {stats.shape}")
            table.references[int(k)] = Reference(feats.astype(np.float32), stats.astype(np.float32), float(maps0[j]))
        n = arrays["rec_set"].shape[0]
        columns = ("rec_cycle", "rec_feature", "rec_map", "rec_source", "rec_episode", "rec_id")
        if any(arrays[c].shape[0] != n for c in columns):
            raise ValueError("record arrays of different lengths")
        feature = arrays["rec_feature"]
        if n and feature.ndim != 2:  # any summary of a selection: its length need not be the reference's
            raise ValueError(f"record features of shape {feature.shape}, expected [records, length]")
        table.set_ids = [int(v) for v in arrays["rec_set"]]
        table.cycles = [int(v) for v in arrays["rec_cycle"]]
        table.features = [np.asarray(f, dtype=np.float32) for f in feature]
        table.maps = [float(v) for v in arrays["rec_map"]]
        table.sources = [int(v) for v in arrays["rec_source"]]
        table.episodes = [int(v) for v in arrays["rec_episode"]]
        table.ids = [int(v) for v in arrays["rec_id"]]
        added = arrays.get("rec_added", np.full((n, 0), -1, dtype=np.int64))
        if added.ndim != 2 or added.shape[0] != n:
            raise ValueError(f"record selections of shape {added.shape} for {n} records")
        table.selections = [row[row >= 0].astype(np.int64) for row in added]
        return table

    def save(self) -> Path:
        """Write the table atomically (temporary file, then rename), merged with what another process saved.

        Under an exclusive lock on ``<path>.lock``, records, build episodes and references that the file holds
        and this table does not (another builder or look-up env saved them since this one was read) are taken in
        first, so concurrent writers lose nothing; then the whole file is replaced in one rename.
        """
        with file_lock(f"{self.path}.lock"):
            if self.path.exists():
                self._merge(LookupTable.open(self.path, self.key, self.config))
            return atomic_write_bytes(self.path, self._to_bytes())

    def _merge(self, other: "LookupTable") -> None:
        """The file's records (in its order), then this table's records the file does not have."""
        theirs = set(other.ids)
        keep = [r for r, i in enumerate(self.ids) if i not in theirs]
        for name in _RECORD_COLUMNS:
            setattr(self, name, list(getattr(other, name)) + [getattr(self, name)[r] for r in keep])
        self.done |= other.done
        for k, ref in other.references.items():
            self.references.setdefault(k, ref)
        self._thresholds.clear()

    def _to_bytes(self) -> bytes:
        dim = next(iter(self.references.values())).features.shape[1] if self.references else 0
        meta = {"format": TABLE_FORMAT, "key": self.key, "config": self.config, "done": sorted(self.done)}
        sets = sorted(self.references)
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps(meta, sort_keys=True)),
            "ref_sets": np.array(sets, dtype=np.int64),
            "ref_map": np.array([self.references[k].initial_map for k in sets], dtype=np.float64),
            "rec_set": np.array(self.set_ids, dtype=np.int64),
            "rec_cycle": np.array(self.cycles, dtype=np.int64),
            "rec_feature": (np.stack(self.features).astype(np.float32) if self.features
                            else np.zeros((0, dim), dtype=np.float32)),
            "rec_map": np.array(self.maps, dtype=np.float64),
            "rec_source": np.array(self.sources, dtype=np.int8),
            "rec_episode": np.array(self.episodes, dtype=np.int64),
            "rec_id": np.array(self.ids, dtype=np.int64),
            "rec_added": _padded(self.selections),
        }
        for k in sets:
            arrays[f"ref_features_{k}"] = self.references[k].features
            arrays[f"ref_stats_{k}"] = self.references[k].stats
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    # -------------------------------------------------------------- contents
    def __len__(self) -> int:
        return len(self.maps)

    def set_reference(self, set_id: int, features: np.ndarray, stats: np.ndarray, initial_map: float) -> None:
        """Store the reference features Φ_k, detection statistics and initial mAP of initial set ``set_id``."""
        if self.references:
            dim = next(iter(self.references.values())).features.shape[1]
            if features.shape[1] != dim:
                raise ValueError(f"reference features of length {features.shape[1]} in a table of length {dim}")
        self.references[int(set_id)] = Reference(
            np.asarray(features, dtype=np.float32), np.asarray(stats, dtype=np.float32), float(initial_map)
        )

    def reference(self, set_id: int) -> Reference | None:
        return self.references.get(int(set_id))

    def summary(self, set_id: int, added: np.ndarray) -> np.ndarray:
        """The feature summary of a labeled set: mean Φ_k over the images ``added`` since the initial set."""
        ref = self.references[int(set_id)]
        return ref.features[np.asarray(added, dtype=np.int64)].astype(np.float64).mean(axis=0).astype(np.float32)

    def add(self, set_id: int, cycle: int, feature: np.ndarray, value: float, source: str = "build",
            episode: int = -1, selection: np.ndarray | None = None) -> int:
        """Append one measured record (``selection``: the train-split indices added to the initial set); returns
        its row number."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        self.set_ids.append(int(set_id))
        self.cycles.append(int(cycle))
        self.features.append(np.asarray(feature, dtype=np.float32).reshape(-1))
        self.maps.append(float(value))
        self.sources.append(SOURCES.index(source))
        self.episodes.append(int(episode))
        self.ids.append(secrets.randbits(63))
        self.selections.append(np.zeros(0, np.int64) if selection is None else np.asarray(selection, np.int64).ravel())
        self._thresholds.pop((int(set_id), int(cycle)), None)
        return len(self.maps) - 1

    def rekeyed(self, features: Sequence[np.ndarray]) -> "LookupTable":
        """A copy in memory whose records carry ``features`` (one per record, in row order) as their keys: the same
        measured selections keyed on another summary (see :attr:`selections`)."""
        if len(features) != len(self.maps):
            raise ValueError(f"rekeyed needs one feature per record ({len(self.maps)}), got {len(features)}")
        lists = {name: list(getattr(self, name)) for name in _RECORD_COLUMNS if name != "features"}
        return dataclasses.replace(self, config=dict(self.config), references=dict(self.references),
                                   done=set(self.done), features=[np.asarray(f, np.float32).ravel() for f in features],
                                   **lists)

    def rows(self, set_id: int, cycle: int) -> np.ndarray:
        """Row numbers of the records of one (initial set, cycle)."""
        sets, cycles = np.asarray(self.set_ids), np.asarray(self.cycles)
        return np.flatnonzero((sets == int(set_id)) & (cycles == int(cycle)))

    def counts(self) -> dict[tuple[int, int], int]:
        """Number of records per (initial set, cycle)."""
        out: dict[tuple[int, int], int] = {}
        for s, c in zip(self.set_ids, self.cycles):
            out[(s, c)] = out.get((s, c), 0) + 1
        return dict(sorted(out.items()))

    # -------------------------------------------------------------- estimates
    def threshold(self, set_id: int, cycle: int) -> float:
        """``mean - std`` of the pairwise L2 distances between the records of (initial set, cycle); NaN with < 2."""
        key = (int(set_id), int(cycle))
        if key not in self._thresholds:
            rows = self.rows(*key)
            if rows.size < 2:
                return float("nan")
            f = np.stack([self.features[r] for r in rows]).astype(np.float64)
            d = np.sqrt(np.maximum(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1), 0.0))
            pairs = d[np.triu_indices(rows.size, k=1)]
            self._thresholds[key] = float(pairs.mean() - pairs.std())
        return self._thresholds[key]

    def estimate(self, set_id: int, cycle: int, feature: np.ndarray, neighbours: int = 5, *,
                 refuse: bool = True, estimator: str = "neighbours") -> Estimate:
        """Inverse-distance-weighted mAP of the ``neighbours`` nearest records (``estimator="ridge"``: the ridge
        fit to every record of the group, module docstring), or a refusal (``value=None``) when every record of
        (initial set, cycle) is farther than :meth:`threshold` (or there are < 2). ``refuse=False`` answers
        whenever there is a record (to measure the estimate's error everywhere)."""
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(map(repr, ESTIMATORS))}; got {estimator!r}")
        rows = self.rows(set_id, cycle)
        if rows.size == 0:
            return Estimate(None)
        f = np.stack([self.features[r] for r in rows]).astype(np.float64)
        d = np.sqrt(np.maximum(((f - np.asarray(feature, dtype=np.float64)[None, :]) ** 2).sum(-1), 0.0))
        tau = self.threshold(set_id, cycle)
        order = np.argsort(d, kind="stable")[: int(neighbours)]
        nearest = float(d[order[0]])
        if refuse and not nearest <= tau:  # NaN threshold (< 2 records) refuses too
            return Estimate(None, threshold=tau, nearest=nearest, n_records=int(rows.size))
        if estimator == "ridge":
            value = _ridge(f, np.array([self.maps[r] for r in rows]), np.asarray(feature, dtype=np.float64))
            return Estimate(value, records=tuple(int(r) for r in rows), threshold=tau, nearest=nearest,
                            n_records=int(rows.size))
        dist = d[order]
        zero = dist == 0.0
        w = zero.astype(np.float64) if zero.any() else 1.0 / dist
        w = w / w.sum()
        value = float(np.dot(w, [self.maps[r] for r in rows[order]]))
        return Estimate(
            value,
            records=tuple(int(r) for r in rows[order]),
            distances=tuple(float(x) for x in dist),
            weights=tuple(float(x) for x in w),
            threshold=tau,
            nearest=nearest,
            n_records=int(rows.size),
        )


def _ridge(features: np.ndarray, maps: np.ndarray, feature: np.ndarray) -> float:
    """The ridge fit of ``maps`` on ``features`` (records as rows; columns standardised over the records, a
    constant column left out) evaluated at ``feature``."""
    mu, sd = features.mean(axis=0), features.std(axis=0)
    used = sd > 0
    x = np.c_[np.ones(features.shape[0]), (features[:, used] - mu[used]) / sd[used]]
    penalty = RIDGE_PENALTY * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    coef = np.linalg.solve(x.T @ x + penalty, x.T @ maps)
    return float(coef[0] + ((feature[used] - mu[used]) / sd[used]) @ coef[1:])


def count_summary(labels: Sequence[np.ndarray]) -> np.ndarray:
    """The ``"counts"`` key of a labeled set (``labels``: each image's category ids): its objects, its images that
    hold any, and the entropy (nats) of its objects over the classes, float32 ``[3]``. Three numbers a regression
    over a cycle's records can weigh with few records (what ``estimator="ridge"`` is for)."""
    ids = np.concatenate([np.asarray(x, dtype=np.int64).ravel() for x in labels]) if len(labels) else np.zeros(0)
    _, counts = np.unique(ids, return_counts=True)
    p = counts / max(int(counts.sum()), 1)
    entropy = float(-(p * np.log(p)).sum())
    nonempty = sum(np.asarray(x).size > 0 for x in labels)
    return np.array([ids.size, nonempty, entropy], dtype=np.float32)


def label_summary(labels: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """``log(1 + n_k)`` of the objects ``n_k`` of each class ``k`` in a labeled set (``labels``: each image's
    category ids ``1..num_classes``), float32 ``[num_classes]``: the ``"labels"`` key of a table record. Labeled
    sets of one size lie apart by how many objects they hold and how they spread over the classes, which is what
    separates their mAPs where images without objects, near-duplicates and rare classes are common."""
    ids = np.concatenate([np.asarray(x, dtype=np.int64).ravel() for x in labels]) if len(labels) else np.zeros(0)
    counts = np.bincount(ids.astype(np.int64) - 1, minlength=num_classes)[:num_classes]
    return np.log1p(counts).astype(np.float32)


def _padded(rows: list[np.ndarray]) -> np.ndarray:
    """Index rows of different lengths as one ``[n, longest]`` array padded with -1."""
    out = np.full((len(rows), max((r.size for r in rows), default=0)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
    return out
