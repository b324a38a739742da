"""DDP with the gloo backend on CPU: quantizer state stays identical across ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adq_fx import LSQActivationConfig, ThresholdActivationConfig
from adq_fx import functional as qf
from adq_fx.quantizers import LSQActivationQuantizer, ThresholdActivationQuantizer
from tests import ddp_worker
from tests.models import images

WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(ddp_worker.run, args=(WORLD, str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_codebooks_and_weights_are_identical_across_ranks_after_training(ranks) -> None:
    first, second = (r["trained"] for r in ranks)
    assert any(k.endswith("codebook") for k in first)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_ddp_training_equals_one_process_on_the_concatenated_batch(ranks) -> None:
    prepared = ddp_worker.prepared_model()
    initial = ddp_worker.codebooks(prepared)
    x, y = ddp_worker.batch()
    ddp_worker.train(prepared, prepared, x, y)
    single = ddp_worker.codebooks(prepared)
    moved = [k for k in single if k.endswith("codebook") and not torch.equal(single[k], initial[k])]
    assert moved  # the codebooks did move, so agreeing is not vacuous
    for key, value in ranks[0]["trained"].items():
        assert torch.allclose(value, single[key], rtol=1e-5, atol=1e-6), key


def test_the_ema_step_averages_cluster_statistics_over_ranks(ranks) -> None:
    """Each rank fed different weights; both hold the update of the averaged statistics."""
    first, second = (r["update"] for r in ranks)
    assert torch.equal(first["codebook"], second["codebook"])
    q = ddp_worker.prepared_model().get_submodule("layer1.conv1").weight_quantizer
    q.load_state_dict(first["before"])  # the state both ranks held before the step
    counts, sums = torch.zeros_like(q.codebook), torch.zeros_like(q.codebook)
    for update in (first, second):
        normalised = qf.normalise(update["weight"], q.scale)
        c, s = qf.cluster_statistics(normalised, qf.nearest_codes(normalised, q.codebook), q.codebook.numel())
        counts, sums = counts + c / WORLD, sums + s / WORLD
    c = q.config
    expected, _, _ = qf.ema_kmeans_step(
        q.codebook, q.ema_counts, q.ema_sums, counts, sums, decay=c.ema_decay, eps=c.eps, pin_zero=c.pin_zero
    )
    assert torch.allclose(first["codebook"], expected, rtol=1e-6, atol=1e-7)
    alone = q.codebook.clone()
    q.update_codebook(
        qf.normalise(first["weight"], q.scale),
        qf.nearest_codes(qf.normalise(first["weight"], q.scale), q.codebook),
    )
    assert not torch.allclose(q.codebook, first["codebook"])  # without the all-reduce rank 0 would differ
    assert not torch.equal(alone, q.codebook)


def test_lsq_step_init_is_the_mean_over_ranks(ranks) -> None:
    assert torch.equal(ranks[0]["lsq_step"], ranks[1]["lsq_step"])
    steps = []
    for rank in range(WORLD):
        q = LSQActivationQuantizer(LSQActivationConfig(bits=3), signed=False, num_channels=3, channel_dim=1)
        q(images(4, seed=10 + rank).abs())
        steps.append(q.step.detach())
    assert not torch.equal(steps[0], steps[1])
    assert torch.allclose(ranks[0]["lsq_step"], (steps[0] + steps[1]) / 2)


def test_threshold_first_batch_scale_is_set_from_the_mean_over_ranks(ranks) -> None:
    assert torch.equal(ranks[0]["threshold_beta1"], ranks[1]["threshold_beta1"])
    clips = []
    for rank in range(WORLD):
        q = ThresholdActivationQuantizer(
            ThresholdActivationConfig(bits=3, init="first_batch"), signed=False, num_channels=3, channel_dim=1
        )
        q(images(4, seed=10 + rank).abs())
        clips.append(2 / q.beta1.detach())
    assert not torch.allclose(clips[0], clips[1])
    torch.testing.assert_close(ranks[0]["threshold_beta1"], 2 / ((clips[0] + clips[1]) / 2))
