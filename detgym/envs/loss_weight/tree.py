"""Every weighting schedule of a DetLossWeight training with T coarse decisions, trained once, as data.

A tree is NAS-Bench-201's idea applied to a training schedule: for one preset, one episode seed and ``T``
decisions of the four weighting schemes, node ``(seed, prefix)`` is the state of ``DetLossWeight-v0`` with
``alpha = iterations // (T + 1)`` after ``reset(seed=seed)`` (which trains the first interval with all weights 1,
as the real env does) and the actions ``prefix``. A child continues its parent's exact state (detector, optimizer,
schedule, data order, random state: :meth:`DetLossWeightEnv.state_dict`) for one interval under one scheme, so a
seed's tree has ``sum_{t=0..T} 4^t`` nodes and its ``4^T`` leaves are every schedule, each trained for real. The
leaf reached by actions ``a`` is what ``gym.make(env_id, **env_kwargs).reset(seed=seed)`` followed by ``step(a_1)
... step(a_T)`` gives, to the bit on the same thread count (``tests/test_loss_weight_tree.py`` checks it).

Per node the table stores what the real env gives at that point (observation, interval losses, variances, rates,
weights, the eq. 7 reward of the step into it, learning rate), the val COCO stats evaluated there, and the node's
wall and CPU seconds. The table is one JSON file with a checksum and no weights; the build's cache
(``$DETGYM_CACHE/loss_weight_trees/<key>/``) keeps one record and, for internal nodes, one snapshot per node, so a
build resumes after any kill and a tree can be extended or a node re-checked. A node whose parent has no snapshot
(a table committed without its cache) re-derives the parent's state by training its path again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from detgym.data.io import atomic_write_json, cache_root

from .presets import PRESETS
from .weighting import N_ACTIONS

__all__ = [
    "TABLE_FORMAT", "BuildReport", "TreeSpec", "TreeTable", "build_tree", "compute_node", "fidelity_check", "node_name",
    "packaged_table", "tree_preset",
]

#: Version of the table layout; part of every tree key.
TABLE_FORMAT = 1
_KIND = "detgym.loss_weight_tree"
#: Where the shipped tables live (package data).
PACKAGED_DIR = Path(__file__).with_name("trees")


def node_name(prefix: Sequence[int]) -> str:
    """``"r"`` for the root, then one digit per action: ``"r"``, ``"r2"``, ``"r21"``, ..."""
    return "r" + "".join(str(int(a)) for a in prefix)


def _prefix(name: str) -> tuple[int, ...]:
    return tuple(int(c) for c in name[1:])


def _prefixes(decisions: int) -> Iterator[tuple[int, ...]]:
    """Every node's prefix, parents before children."""
    level: list[tuple[int, ...]] = [()]
    for _ in range(decisions + 1):
        yield from level
        level = [p + (a,) for p in level for a in range(N_ACTIONS)]


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class TreeSpec:
    """Which trainings a tree holds: a DetLossWeight preset (plus constructor overrides), ``decisions`` T and the
    torch thread count its trainings ran with (CPU float results depend on it)."""

    preset: str = "default"
    decisions: int = 3
    threads: int = 1
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from detgym.envs.substrate import check_positive_int

        check_positive_int("decisions", self.decisions)
        check_positive_int("threads", self.threads)
        for name in ("alpha", "reward"):
            if name in self.overrides:
                raise ValueError(f"overrides must not set {name!r}: the tree sets alpha from the iterations "
                                 "and the decisions")

    @property
    def config(self) -> Any:
        """The DetLossWeight preset with the overrides (validated; ValueError naming an unknown preset)."""
        config = PRESETS.get_preset(self.preset).merged(**dict(self.overrides))
        config.validate()
        return config

    @property
    def total_iterations(self) -> int:
        config = self.config
        if config.iterations is not None:
            return int(config.iterations)
        from detgym.train import get_recipe

        return int(get_recipe(config.recipe).train.replace(**dict(config.train_overrides)).iterations)

    @property
    def alpha(self) -> int:
        """Iterations per interval: the reset's interval plus one per decision."""
        alpha = self.total_iterations // (self.decisions + 1)
        if alpha < 1:
            raise ValueError(f"decisions={self.decisions} is too many for {self.total_iterations} iterations "
                             f"(accepted: 1..{self.total_iterations - 1})")
        return alpha

    def env_kwargs(self) -> dict[str, Any]:
        """The constructor arguments of the real env whose episodes the tree holds (with ``preset``)."""
        return {"preset": self.preset, **{k: v for k, v in self.overrides.items()}, "alpha": self.alpha}

    def env_id(self) -> str:
        """The registered DetLossWeight id of the preset (``DetLossWeight-v0`` for ``"default"``)."""
        from detgym.envs import PRESET_IDS

        for suffix, preset in PRESET_IDS["loss_weight"][0]:
            if preset == self.preset:
                return f"DetLossWeight{suffix}-v0"
        return "DetLossWeight-v0"

    def key(self) -> str:
        """A 16-hex-digit hash of everything the trainings depend on (cache directory name)."""
        config = self.config.replace(alpha=self.alpha, reward="loss")
        return _digest({"format": TABLE_FORMAT, "config": config.to_dict(), "decisions": self.decisions,
                        "threads": self.threads})[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "decisions": self.decisions, "threads": self.threads,
                "overrides": json.loads(json.dumps(dict(self.overrides), default=str))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TreeSpec":
        return cls(data["preset"], int(data["decisions"]), int(data["threads"]), dict(data.get("overrides") or {}))

    def n_nodes(self) -> int:
        return sum(N_ACTIONS**t for t in range(self.decisions + 1))


# ------------------------------------------------------------------------------------------------------- table
@dataclass
class TreeTable:
    """The nodes of one :class:`TreeSpec`'s trees, by seed and node name, with what a tabular env needs."""

    spec: TreeSpec
    #: seed -> node name -> record (see :func:`compute_node`).
    nodes: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: Fixed facts of the env (level names, observation bounds, env id and kwargs, versions).
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any]) -> None:
        self.nodes.setdefault(int(record["seed"]), {})[node_name(record["prefix"])] = dict(record)

    def has(self, seed: int, prefix: Sequence[int]) -> bool:
        return node_name(prefix) in self.nodes.get(int(seed), {})

    def node(self, seed: int, prefix: Sequence[int]) -> dict[str, Any]:
        """The record of node ``prefix`` of ``seed``'s tree; ValueError when the table does not hold it."""
        try:
            return self.nodes[int(seed)][node_name(prefix)]
        except KeyError:
            raise ValueError(f"the tree table holds no node {node_name(prefix)} of seed {seed} (seeds with complete "
                             f"trees: {self.complete_seeds()})") from None

    def complete_seeds(self) -> list[int]:
        """Seeds whose every node is in the table."""
        n = self.spec.n_nodes()
        return sorted(s for s, nodes in self.nodes.items() if len(nodes) == n)

    def leaves(self, seed: int) -> dict[tuple[int, ...], dict[str, Any]]:
        """action sequence -> leaf record, for a complete seed."""
        return {_prefix(name): rec for name, rec in self.nodes[int(seed)].items()
                if len(name) - 1 == self.spec.decisions}

    def best_leaf(self, seed: int, metric: str = "AP") -> tuple[tuple[int, ...], float]:
        """The action sequence with the highest final val ``metric`` (ties: the first in action order)."""
        leaves = sorted(self.leaves(seed).items())
        actions, rec = max(leaves, key=lambda item: item[1]["stats"][metric])
        return actions, float(rec["stats"][metric])

    def recipe(self, seed: int, actions: Sequence[int]) -> dict[str, Any]:
        """How to re-run the episode for real: env id, constructor kwargs, reset seed, per-interval actions, and
        the torch thread count the tree was built with."""
        env_id, kwargs = self.meta.get("env_id"), self.meta.get("env_kwargs")
        if env_id is None or kwargs is None:
            env_id, kwargs = self.spec.env_id(), self.spec.env_kwargs()
        return {"env_id": env_id, "env_kwargs": dict(kwargs), "seed": int(seed), "actions": [int(a) for a in actions],
                "threads": self.spec.threads}

    # ---------------------------------------------------------------------------------------------- files
    def to_json(self) -> dict[str, Any]:
        body = {"kind": _KIND, "format": TABLE_FORMAT, "spec": self.spec.to_dict(), "key": self.spec.key(),
                "meta": self.meta,
                "nodes": {str(s): dict(sorted(n.items())) for s, n in sorted(self.nodes.items())}}
        return {**body, "checksum": _digest(body)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table atomically (JSON, sorted, with a sha256 checksum of its body)."""
        return atomic_write_json(path, self.to_json(), fsync=True)

    @classmethod
    def load(cls, path: str | os.PathLike, spec: TreeSpec | None = None) -> "TreeTable":
        """Read a table file; ValueError naming the path for a damaged file (bad JSON or checksum), another
        format, or a table of another configuration than ``spec`` (stale)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            body = {k: v for k, v in data.items() if k != "checksum"}
            ok = data.get("kind") == _KIND and data.get("checksum") == _digest(body)
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(
                f"tree table {path} could not be read ({err}); rebuild it with detgym build-tree"
            ) from None
        if not ok:
            raise ValueError(f"tree table {path} is damaged (its checksum does not match) or not a tree table; "
                             "rebuild it with detgym build-tree")
        if data.get("format") != TABLE_FORMAT:
            raise ValueError(f"tree table {path} has format {data.get('format')}, this detgym reads {TABLE_FORMAT}")
        table_spec = TreeSpec.from_dict(data["spec"])
        if spec is not None and (table_spec != spec or data["key"] != spec.key()):
            raise ValueError(f"tree table {path} was built for {table_spec.to_dict()} (key {data['key']}), not "
                             f"{spec.to_dict()} (key {spec.key()}): it is stale; rebuild it with detgym build-tree")
        if data["key"] != table_spec.key():
            raise ValueError(f"tree table {path} was built for another configuration of preset "
                             f"{table_spec.preset!r} (key {data['key']}, now {table_spec.key()}): it is stale")
        table = cls(table_spec, meta=data["meta"])
        for nodes in data["nodes"].values():
            for record in nodes.values():
                table.add(record)
        return table


def tree_preset(env_id: str) -> str:
    """The preset of a registered ``DetLossWeight`` id (the discrete env: the tree's actions are its schemes);
    ValueError listing the accepted ids otherwise."""
    from detgym.envs import PRESET_IDS

    ids = {f"DetLossWeight{suffix}-v{version}": preset
           for version, rows in PRESET_IDS["loss_weight"].items() for suffix, preset in rows}
    if env_id not in ids:
        raise ValueError(f"--env {env_id!r} has no tree; accepted: {', '.join(ids)}")
    return ids[env_id]


def packaged_table(preset: str, decisions: int) -> Path:
    """The path a shipped table of ``preset`` with ``decisions`` has (it may not exist)."""
    return PACKAGED_DIR / f"{preset}-T{decisions}.json"


# ---------------------------------------------------------------------------------------------- one node
_ENVS: dict[str, Any] = {}


def _env(spec: TreeSpec) -> Any:
    """One env per tree per process (a worker computes many nodes of the same tree)."""
    key = spec.key()
    if key not in _ENVS:
        from .env import DetLossWeightEnv

        _ENVS.clear()
        _ENVS[key] = DetLossWeightEnv(**spec.env_kwargs())
    return _ENVS[key]


def _cache_dir(spec: TreeSpec, cache_dir: str | os.PathLike | None) -> Path:
    return cache_root(cache_dir) / "loss_weight_trees" / spec.key()


def _files(spec: TreeSpec, cache_dir: str | os.PathLike | None, seed: int, prefix: Sequence[int]) -> tuple[Path, Path]:
    root, name = _cache_dir(spec, cache_dir), f"s{int(seed)}-{node_name(prefix)}"
    return root / "nodes" / f"{name}.json", root / "snapshots" / f"{name}.pt"


def _enter(env: Any, spec: TreeSpec, seed: int, prefix: tuple[int, ...], cache_dir: Any) -> None:
    """Put ``env`` in the state of node ``prefix``: its snapshot, else its parent's state and one step (saved)."""
    from detgym.train.checkpoint import atomic_torch_save, load_plain

    if not prefix:
        env.reset(seed=int(seed))
        return
    _, snapshot = _files(spec, cache_dir, seed, prefix)
    if snapshot.is_file():
        try:
            env.load_state_dict(load_plain(snapshot))
            return
        except ValueError:
            snapshot.unlink(missing_ok=True)  # damaged: derived again below
    _enter(env, spec, seed, prefix[:-1], cache_dir)
    env.step(prefix[-1])
    atomic_torch_save(env.state_dict(), snapshot)


def _level_record(info: Mapping[str, Any]) -> dict[str, Any]:
    return {name: [float(x) for x in info[name]] for name in ("interval_losses", "variances", "rates", "weights")}


def compute_node(spec: TreeSpec, seed: int, prefix: Sequence[int], cache_dir: str | os.PathLike | None = None
                 ) -> dict[str, Any]:
    """Train node ``prefix`` of ``seed``'s tree from its parent's state, evaluate it on val, save its record (and
    its snapshot unless it is a leaf) in the build cache, and return the record.

    Record: ``seed``, ``prefix``, ``obs`` (the real env's observation there), ``stats`` (val COCO stats),
    ``interval_losses`` / ``variances`` / ``rates`` / ``weights`` of the interval that led there, ``reward_loss``
    (eq. 7 of paper 000; 0 at the root), ``lr``, ``iteration``, ``train_wall_s`` / ``train_cpu_s`` /
    ``eval_wall_s`` / ``eval_cpu_s``; the root adds ``model_seed`` and ``train_seed``.
    """
    from detgym.train.checkpoint import atomic_torch_save

    prefix = tuple(int(a) for a in prefix)
    env = _env(spec)
    record_file, snapshot = _files(spec, cache_dir, seed, prefix)
    if prefix:
        _enter(env, spec, seed, prefix[:-1], cache_dir)
    wall, cpu = time.perf_counter(), time.process_time()
    if prefix:
        obs, reward, _, _, info = env.step(prefix[-1])
    else:
        obs, info = env.reset(seed=int(seed))
        reward = 0.0
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    stats = info.get("final_metrics") or env.trainer.evaluate()
    record = {
        "seed": int(seed), "prefix": list(prefix), "obs": [float(x) for x in obs],
        "stats": {k: float(v) for k, v in stats.items()}, **_level_record(info), "reward_loss": float(reward),
        "lr": float(info["lr"]), "iteration": int(info["iteration"]),
        "train_wall_s": train_wall, "train_cpu_s": train_cpu,
        "eval_wall_s": time.perf_counter() - wall, "eval_cpu_s": time.process_time() - cpu,
    }
    if not prefix:
        record.update(model_seed=int(info["model_seed"]), train_seed=int(info["train_seed"]))
    if len(prefix) < spec.decisions:
        atomic_torch_save(env.state_dict(), snapshot)
    atomic_write_json(record_file, record, fsync=True)
    return record


def _env_meta(spec: TreeSpec) -> dict[str, Any]:
    import torch

    env = _env(spec)
    space = env.observation_space
    return {"env_id": spec.env_id(), "env_kwargs": spec.env_kwargs(), "alpha": spec.alpha,
            "iterations": spec.alpha * (spec.decisions + 1), "level_names": list(env.level_names),
            "observation_low": space.low.tolist(), "observation_high": space.high.tolist(),
            "config": env.config.to_dict(), "torch": torch.__version__, "machine": platform.machine()}


# ------------------------------------------------------------------------------------------------------- build
def _cached_records(spec: TreeSpec, cache_dir: Any) -> Iterator[dict[str, Any]]:
    folder = _cache_dir(spec, cache_dir) / "nodes"
    for path in sorted(folder.glob("s*-r*.json")) if folder.is_dir() else ():
        try:
            yield json.loads(path.read_text())
        except ValueError:
            path.unlink(missing_ok=True)  # a damaged record: the node is computed again


def _check_disk(spec: TreeSpec, seeds: Sequence[int], cache_dir: Any) -> None:
    """ValueError with the estimate when the snapshots of the internal nodes would not fit the disk."""
    import torch

    n_params = sum(p.numel() for p in _env(spec).substrate.build_model(0).parameters())
    internal = sum(N_ACTIONS**t for t in range(spec.decisions)) * len(seeds)
    need = internal * n_params * 4 * 3  # weights and AdamW's two moments, float32
    root = _cache_dir(spec, cache_dir)
    probe = next((p for p in [root, *root.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ValueError(f"decisions={spec.decisions} over {len(seeds)} seed(s) needs about {need / 1e9:.1f} GB of "
                         f"snapshots ({internal} internal nodes x {n_params * 12 / 1e6:.1f} MB) in {root}; "
                         f"{free / 1e9:.1f} GB are free (torch {torch.__version__})")


@dataclass
class BuildReport:
    """What :func:`build_tree` did: nodes computed now, their CPU seconds, wall seconds, the table file."""

    computed: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    interrupted: bool = False
    path: Path | None = None
    table: TreeTable | None = None


def build_tree(spec: TreeSpec, seeds: Sequence[int], *, out: str | os.PathLike | None = None, workers: int = 1,
               backend: str = "process", ray_address: str | None = None, cache_dir: str | os.PathLike | None = None,
               progress: bool = True, save_every: int = 1) -> BuildReport:
    """Build (or extend) the trees of ``seeds`` and write the table to ``out`` (default: the packaged path).

    Nodes already in ``out`` or in the build cache are kept and never trained again; the others run as parallel
    jobs (a node as soon as its parent is done; seeds in order, so the first seeds' trees complete first). The
    table is rewritten atomically after every ``save_every`` finished nodes, so a killed build loses at most the
    nodes running at that moment. Ctrl-C stops it the same way (``interrupted`` in the report).
    """
    from tqdm.auto import tqdm

    from detgym.parallel import job_pool

    seeds = [int(s) for s in seeds]
    path = Path(out) if out is not None else packaged_table(spec.preset, spec.decisions)
    table = TreeTable.load(path, spec) if path.is_file() else TreeTable(spec)
    for record in _cached_records(spec, cache_dir):
        if record["seed"] in seeds and not table.has(record["seed"], record["prefix"]):
            table.add(record)
    todo = [(s, p) for s in seeds for p in _prefixes(spec.decisions) if not table.has(s, p)]
    report = BuildReport(path=path, table=table)
    if todo:
        _check_disk(spec, seeds, cache_dir)
    table.meta = table.meta or _env_meta(spec)
    start = time.perf_counter()
    total = len(seeds) * spec.n_nodes()
    with tqdm(total=total, initial=total - len(todo), desc="build-tree", unit="node", disable=not progress) as bar:
        try:
            with job_pool(workers, backend=backend, threads=spec.threads, ray_address=ray_address,
                          preload=("detgym.envs.loss_weight.tree",)) as pool:
                _schedule(pool, spec, todo, table, report, cache_dir, bar, workers, path, save_every)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            table.save(path)
    report.wall_s = time.perf_counter() - start
    return report


def _schedule(pool: Any, spec: TreeSpec, todo: list, table: TreeTable, report: BuildReport, cache_dir: Any,
              bar: Any, workers: int, path: Path, save_every: int) -> None:
    """Submit ready nodes (parent done) in order, at most ``workers`` at a time; record each as it finishes."""
    waiting = list(todo)
    while waiting or pool.pending:
        ready = [n for n in waiting if not n[1] or table.has(n[0], n[1][:-1])]
        for node in ready[: max(workers - pool.pending, 0)]:
            waiting.remove(node)
            pool.submit(node, compute_node, spec, node[0], node[1], cache_dir)
        for (seed, prefix), result in pool.finished():
            record = result()
            table.add(record)
            report.computed += 1
            report.cpu_s += record["train_cpu_s"] + record["eval_cpu_s"]
            bar.update(1)
            left = len(waiting) + pool.pending
            bar.set_postfix_str(f"seed {seed} {node_name(prefix)}; "
                                f"about {left * report.cpu_s / report.computed / 60:.0f} CPU-min left", refresh=False)
            if report.computed % save_every == 0:
                table.save(path)


def fidelity_check(table: TreeTable, seed: int, actions: Sequence[int], *, threads: int | None = None,
                   metric: str = "AP") -> tuple[float, float]:
    """Re-run the leaf ``actions`` of ``seed`` through the real env and return (stored, re-run) final ``metric``.

    Raises:
        ValueError: ``threads`` differs from the thread count the tree was built with (the re-run would not be
            comparable), or the table does not hold the leaf.
    """
    import gymnasium as gym

    from detgym.parallel import torch_threads

    spec = table.spec
    if threads is not None and int(threads) != spec.threads:
        raise ValueError(f"threads={threads}: the tree was built with {spec.threads} torch thread(s); a fidelity "
                         f"check must use the same count")
    stored = float(table.node(seed, actions)["stats"][metric])
    recipe = table.recipe(seed, actions)
    with torch_threads(spec.threads):
        env = gym.make(recipe["env_id"], **recipe["env_kwargs"])
        try:
            env.reset(seed=recipe["seed"])
            info: dict[str, Any] = {}
            for a in recipe["actions"]:
                _, _, _, _, info = env.step(a)
        finally:
            env.close()
    return stored, float(info["final_metrics"][metric])

