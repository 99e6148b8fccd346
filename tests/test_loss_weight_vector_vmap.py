"""The vmap batching of the vector trainer (the GPU path, checked here on the CPU): its optimizer is torch's
AdamW / SGD given the same gradients, its members follow loop-mode members to float tolerance over the first
iterations (later they drift apart: grouped convolutions sum in another order and Adam amplifies it), a diverged
member is left untouched, and the vector env runs on it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from detgym.data import DigitsConfig, digits_dataset
from detgym.envs.loss_weight import DetLossWeightVectorEnv
from detgym.envs.loss_weight.presets import PRESETS
from detgym.envs.substrate import LoadedSubstrate
from detgym.models import build_detector
from detgym.train import TrainConfig, Trainer, VectorTrainer
from detgym.train.stacked import StackedMembers


@pytest.fixture(scope="module")
def small_set(digits_cache):
    return digits_dataset("train", cache_dir=digits_cache,
                          config=DigitsConfig(image_size=64, train_size=8, val_size=4, test_size=0))


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_stacked_optimizer_is_torchs(optimizer, small_set):
    cfg = TrainConfig(device="cpu", iterations=20, warmup_iters=2, optimizer=optimizer, lr=1e-2, backbone_lr_mult=0.5,
                      grad_clip=1.0)
    torch.manual_seed(0)
    models = [build_detector("fcos", image_size=64, fpn_channels=16, head_num_convs=1) for _ in range(2)]
    reference = [Trainer(copy.deepcopy(m), small_set, config=cfg) for m in models]
    stacked = StackedMembers([Trainer(m, small_set, config=cfg) for m in models], cfg)
    g = torch.Generator().manual_seed(1)
    for it in range(4):
        scale = 30.0 if it == 1 else 0.1  # iteration 1 is clipped, the others are not
        grads = {n: torch.randn(p.shape, generator=g) * scale for n, p in stacked.params.items()}
        for i, trainer in enumerate(reference):
            for n, p in trainer.model.named_parameters():
                p.grad = grads[n][i].clone()
            torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.grad_clip)
            trainer.optimizer.step()
        for n, p in stacked.params.items():
            p.grad = grads[n].clone()
        stacked._update(np.array([True, True]))
        for a, b in zip(reference, stacked.trainers):
            for t in (a, b):
                t.iteration += 1
                t._set_lr(t.iteration)
        for i, trainer in enumerate(reference):
            for n, p in trainer.model.named_parameters():
                torch.testing.assert_close(stacked.params[n][i], p.detach(), rtol=1e-5, atol=1e-6)
                assert stacked.trainers[i].model.get_parameter(n).data_ptr() == stacked.params[n][i].data_ptr()


@pytest.fixture(scope="module")
def substrate(digits_cache):
    preset = PRESETS.get_preset("test").merged(dataset_kwargs={"cache_dir": str(digits_cache)})
    return LoadedSubstrate(preset)


def test_vmap_members_follow_loop_members(substrate):
    config = substrate.train_config.replace(seed=3, iterations=16, device="cpu")
    weights = np.ones((3, 5), dtype=np.float32)
    weights[1, 0], weights[2, 3] = 2.5, 1.7
    losses = {}
    for mode in ("loop", "vmap"):
        trainer = VectorTrainer([substrate.build_model(s) for s in (1, 2, 3)], substrate.train_set, substrate.val_set,
                                config, batching=mode)
        assert trainer.batching == mode
        losses[mode] = np.array([[r.level_losses for r in trainer.step(weights).results] for _ in range(3)])
        trainer.close()
    np.testing.assert_allclose(losses["vmap"], losses["loop"], rtol=1e-4, atol=1e-6)


def test_vmap_leaves_a_diverged_member_alone(substrate):
    config = substrate.train_config.replace(seed=0, iterations=16, device="cpu")
    trainer = VectorTrainer([substrate.build_model(s) for s in (4, 5)], substrate.train_set, substrate.val_set, config,
                            batching="vmap")
    with torch.no_grad():
        next(trainer.members[0].model.parameters()).fill_(float("nan"))
    before = [torch.cat([p.detach().flatten().clone() for p in m.model.parameters()]) for m in trainer.members]
    step = trainer.step(np.ones((2, 5)))
    after = [torch.cat([p.detach().flatten() for p in m.model.parameters()]) for m in trainer.members]
    assert step.errors[0] is not None and step.results[0] is None and trainer.members[0].iteration == 0
    assert step.errors[1] is None and trainer.members[1].iteration == 1
    torch.testing.assert_close(after[0], before[0], equal_nan=True)
    assert not torch.equal(after[1], before[1])
    # the member restarts on a fresh detector and trains
    trainer.replace_member(0, substrate.build_model(6))
    step = trainer.step(np.ones((2, 5)))
    assert all(e is None for e in step.errors) and trainer.members[0].iteration == 1
    trainer.close()


def test_vector_env_runs_on_vmap(digits_cache):
    venv = DetLossWeightVectorEnv(2, "test", batching="vmap", dataset_kwargs={"cache_dir": str(digits_cache)})
    assert venv.batching == "vmap"
    venv.reset(seed=0)
    done = np.zeros(2, dtype=bool)
    while not done.all():
        obs, reward, term, trunc, info = venv.step(np.array([2, 3]))
        done = term | trunc
    assert venv.observation_space.contains(obs) and set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
    assert info["_final_metrics"].all() and len(info["final_metrics"]["AP"]) == 2
    with pytest.raises(ValueError, match="batching must be one of 'auto', 'loop', 'vmap'"):
        DetLossWeightVectorEnv(2, "test", batching="grouped", dataset_kwargs={"cache_dir": str(digits_cache)})
    venv.close()
