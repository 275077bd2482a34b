"""The planner: an analytic pre-filter over meshes, remat policies, micro-batches and logits chunks, then real TPU
compilations of the best few; a config that cannot fit is refused with a message that says why."""

import pytest

from sailor2_jax.aot.plan import Candidate, candidates, plan
from sailor2_jax.aot.topology import parse_slice
from sailor2_jax.config import apply_overrides, load
from sailor2_jax.train.config import TrainConfig

pytest.importorskip("libtpu", reason="TPU compilation needs the libtpu wheel (the test extra installs it)")

TINY = ["model.base=tiny", "model.vocab_size=256", "data.batch_size=8", "data.seq_len=256"]


def test_plan_returns_a_fitting_candidate_with_its_overrides():
    cfg = load(TrainConfig, None, TINY)
    result = plan(cfg, cfg.model, parse_slice("v5p:2x2x1"), keep=1, max_compiles=1)
    assert len(result.compiled) == 1 and len(result.fitting) == 1
    assert result.considered >= result.shortlisted >= 1
    candidate, report = result.fitting[0]
    assert report.fits and report.hbm["headroom_used"] <= 0.9
    # the printed overrides give the same config as the candidate
    again = load(TrainConfig, None, TINY + candidate.overrides())
    assert again == candidate.apply(cfg)
    assert report.mesh == {"data": candidate.data, "fsdp": candidate.fsdp, "context": candidate.context,
                           "tensor": candidate.tensor}


def test_plan_refuses_a_model_that_cannot_fit_the_slice():
    """Sailor2-20B's train state alone (~19 B parameters x 16 bytes) is far beyond four v6e chips (31 GiB each):
    no compilation is spent, and the message names the smallest estimate and the limit."""
    cfg = load(TrainConfig, None, ["model.base=sailor2-20b", "data.batch_size=64", "data.seq_len=4096"])
    with pytest.raises(ValueError, match=r"nothing fits v6e:2x2: the smallest estimate is [\d.]+ GiB per chip"):
        plan(cfg, cfg.model, parse_slice("v6e:2x2"))


def test_no_mesh_for_the_batch_is_a_clear_error():
    cfg = load(TrainConfig, None, TINY + ["data.batch_size=3"])
    with pytest.raises(ValueError, match="no .data, fsdp, context, tensor. mesh of 4 chips"):
        candidates(cfg, cfg.model, 4)


def test_candidates_respect_the_sharding_rules():
    """fsdp divides the hidden size, tensor the heads (Sailor2-1B: 2 KV heads), data x fsdp x micro-batches the
    batch."""
    cfg = load(TrainConfig, None, ["model.base=sailor2-1b", "data.batch_size=64", "data.seq_len=4096"])
    found = candidates(cfg, cfg.model, 64)
    assert {c.tensor for c in found} == {1, 2}
    assert all(896 % c.fsdp == 0 and 64 % (c.data * c.fsdp * c.micro_batches) == 0 for c in found)
    assert Candidate(1, 64, 1, "dots_saveable", 1, 1024) in found
    assert apply_overrides({}, Candidate(2, 32, 1, "full", 2, 512).overrides())["mesh"] == {
        "data": 2, "fsdp": 32, "context": 1, "tensor": 1}
    assert {c.context for c in found} == {1}  # 4K sequences are never split


def test_long_sequences_get_context_candidates():
    cfg = load(TrainConfig, None, ["model.base=sailor2-8b", "data.batch_size=16", "data.seq_len=131072"])
    found = candidates(cfg, cfg.model, 64)
    assert {1, 2, 4, 8, 16} <= {c.context for c in found}
    assert all(131072 % (2 * c.context * 512) == 0 and 3584 % (c.fsdp * c.context) == 0 for c in found)
