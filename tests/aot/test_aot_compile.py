"""Ahead-of-time compilation of the real training step for a TPU slice with the real TPU compiler (libtpu), on
this CPU machine: Splash lowers as a Mosaic kernel, memory analysis and the compiler's own HBM verdict come back,
and the FLOPs counted through every loop equal the model's matmuls exactly."""

import json
import subprocess
import sys

import pytest

from sailor2_jax.aot.topology import parse_slice
from sailor2_jax.config import load
from sailor2_jax.train.config import TrainConfig

pytest.importorskip("libtpu", reason="TPU compilation needs the libtpu wheel (the test extra installs it)")

TINY = ["model.base=tiny", "model.vocab_size=256", "data.batch_size=8", "data.seq_len=256",
        "data.micro_batches=2", "objective.logits_chunk=128", "optimizer.schedule.kind=constant"]


@pytest.fixture(scope="module")
def tiny_report():
    from sailor2_jax.aot.compile import compile_train_step

    cfg = load(TrainConfig, None, TINY)
    return cfg, compile_train_step(cfg, cfg.model, parse_slice("v5p:2x2x1"))


def test_splash_lowers_as_a_mosaic_kernel_for_a_tpu_slice(tiny_report):
    """`attention: auto` follows the mesh's devices (TPU), not this machine's backend (CPU)."""
    cfg, r = tiny_report
    assert r.attention["requested"] == "auto"
    assert r.attention["lowered"].startswith("splash")
    L, M = cfg.model.num_layers, cfg.data.micro_batches
    calls = r.attention["kernel_calls"]  # tpu_custom_call instructions, counted through the loops
    by_kind = {k: sum(n for name, n in calls.items() if name.startswith(k))
               for k in ("splash_mha_fwd", "splash_mha_dq", "splash_mha_dkv")}
    # the forward kernel runs again in the backward pass (dots_saveable does not keep its output)
    assert by_kind == {"splash_mha_fwd": 2 * L * M, "splash_mha_dq": L * M, "splash_mha_dkv": L * M}


def test_memory_analysis_and_the_compilers_verdict(tiny_report):
    _, r = tiny_report
    h = r.hbm
    assert h["arguments"] > 0 and h["temporaries"] > 0 and h["outputs"] > 0
    assert h["source"] == "compiler log"
    assert h["compiler_limit"] == pytest.approx(95.74 * 2 ** 30, rel=1e-3)  # v5p
    assert 0 < h["compiler_total"] < h["compiler_limit"] and r.fits


def test_flops_count_every_loop_iteration(tiny_report):
    """Micro-batches x scanned layers, and the chunked LM head: the matmul FLOPs equal the model's exactly —
    6 x (layer matmuls + LM head) per token, plus the LM head's forward again (its chunks are rematerialised)."""
    cfg, r = tiny_report
    m = cfg.model
    D, F, NH, KH = m.hidden_size, m.intermediate_size, m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
    per_token = 6 * (m.num_layers * (D * NH + 2 * D * KH + NH * D + 3 * D * F) + m.vocab_size * D)
    per_token += 2 * m.vocab_size * D
    tokens_per_chip = cfg.data.batch_size * cfg.data.seq_len / r.chips
    assert r.flops["matmuls"] == pytest.approx(per_token * tokens_per_chip, rel=0.01)
    # Splash: forward twice (recomputed), dq and dkv once, per layer and micro-batch; one 256-block at T = 256
    L, M, T = m.num_layers, cfg.data.micro_batches, cfg.data.seq_len
    rows = cfg.data.batch_size // M // r.chips
    per_call = rows * m.num_heads * T * T * m.head_dim
    assert not r.attention["kernels_not_counted"]
    assert r.flops["kernels"] == pytest.approx(L * M * (2 * 4 + 6 + 8) * per_call)
    assert r.flops["cost_analysis"] < 0.6 * r.flops["total"]  # XLA's own count: each loop body once
    ro = r.roofline
    ops_s = ro["compute_bound_ops_s"] + ro["memory_bound_ops_s"]
    assert ro["step_s"] == max(ops_s, ro["ici_s"]) > 0
    assert ops_s >= max(ro["compute_s"], ro["hbm_s"]) * (1 - 1e-9)  # each op at its own bound
    assert 0 < ro["mfu"] < 1


def test_context_parallel_ring_and_all_gather_count_the_same_attention_flops():
    """Split over context 2, each shard computes the same causal pairs either way (all-gather: two query chunks
    against the gathered keys; ring: its own chunks causal, then the visiting block unmasked on half its pairs):
    the kernels' FLOPs agree."""
    from sailor2_jax.aot.compile import compile_train_step

    reports = {}
    for strategy in ("all_gather", "ring"):
        cfg = load(TrainConfig, None, TINY + ["data.seq_len=1024", "mesh.fsdp=2", "mesh.context=2",
                                              "compute.remat=none", f"compute.context_attention={strategy}"])
        reports[strategy] = compile_train_step(cfg, cfg.model, parse_slice("v5p:2x2x1"))
    for r in reports.values():
        assert r.attention["lowered"].startswith("splash") and not r.attention["kernels_not_counted"]
    assert reports["ring"].flops["kernels"] == pytest.approx(reports["all_gather"].flops["kernels"])
    assert reports["ring"].flops["matmuls"] == pytest.approx(reports["all_gather"].flops["matmuls"])


def test_without_loops_the_counts_equal_xlas():
    """With no loop to multiply (layers unrolled, one micro-batch, one logits chunk) the walker's bytes over every
    memory space come close to XLA's own `bytes accessed` for the TPU program (tile padding included) from below:
    XLA charges each asynchronous copy into VMEM its source twice (the `copy-start`'s operand, and again as an
    element of its tuple shape), the walker once. Its matmul FLOPs stay below XLA's (which adds the elementwise ops)
    by little."""
    from sailor2_jax.aot.compile import compile_train_step

    cfg = load(TrainConfig, None, TINY[:4] + ["compute.scan_layers=false", "objective.logits_chunk=256"])
    r = compile_train_step(cfg, cfg.model, parse_slice("v5p:2x2x1"))
    assert 0.9 * r.roofline["cost_analysis_bytes"] < r.roofline["bytes_accessed"] < r.roofline["cost_analysis_bytes"]
    assert r.roofline["hbm_bytes"] < r.roofline["bytes_accessed"]  # on-chip (VMEM) buffers are not HBM traffic
    assert 0.8 * r.flops["cost_analysis"] < r.flops["matmuls"] < r.flops["cost_analysis"]


def test_cli_json_and_a_refused_program():
    """One JSON object on stdout; a program whose temporaries exceed HBM is refused by the compiler: fits false,
    its message kept, exit code 1."""
    cmd = [sys.executable, "-m", "sailor2_jax.cli", "compile", "--config", "demo_pretrain", "--topology",
           "v5p-8", "--json", "model.base=tiny", "data.batch_size=4096", "data.seq_len=4096",
           "objective.logits_chunk=4096", "compute.remat=none"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["topology"] == "v5p:2x2x1" and report["chips"] == 4
    assert report["fits"] is False and "HBM" in report["refusal"]
    assert report["hbm"]["compiler_total"] > report["hbm"]["compiler_limit"]


def test_meshes_that_split_physical_axes():
    """A 4x4x4 torus has no device order keeping data=2 x fsdp=32 within physical axes: the mesh is still made."""
    from sailor2_jax.config import MeshConfig
    from sailor2_jax.sharding import make_mesh

    mesh = make_mesh(MeshConfig(data=2, fsdp=32, tensor=1), parse_slice("v5p-128").devices())
    assert dict(mesh.shape) == {"data": 2, "fsdp": 32, "context": 1, "tensor": 1}
    assert len({d.id for d in mesh.devices.flat}) == 64


def test_topology_names():
    assert (parse_slice("v5p-128").topology, parse_slice("v5p-128").chips) == ("v5p:4x4x4", 64)
    assert parse_slice("v6e-64").topology == "v6e:8x8"
    assert parse_slice("v5e-16").topology == "v5e:4x4"
    assert parse_slice("v5p:2x2x1").chips == 4
    for bad, msg in (("v5p-7", "TensorCores"), ("v6e-48", "not a v6e slice size"), ("h100-8", "expected a Cloud"),
                     ("v5p:2x2", "3-D")):
        with pytest.raises(ValueError, match=msg):
            parse_slice(bad)


def test_the_generation_engine_compiles_for_the_slice_and_its_decode_flops_are_exact():
    """`compile --decode`: prefill and the decode loop of the generation engine, on the training mesh of the slice.
    The decode loop's trip count is a runtime value (rows stop on eos): every one of max_new - 1 steps is counted,
    each doing the forward matmuls of one token per row plus attention over all cache slots."""
    from sailor2_jax.aot.compile import compile_generation

    cfg = load(TrainConfig, None, TINY)
    rows, samples, max_new = 4, 2, 16
    prefill, decode = compile_generation(cfg, cfg.model, parse_slice("v5p:2x2x1"), rows=rows, prompt_len=20,
                                         max_new=max_new, samples=samples)
    assert (prefill.program, decode.program) == ("prefill", "decode")
    assert prefill.batch["prompt_len"] == 32  # the engine's length bucket
    assert prefill.fits and decode.fits and decode.attention["lowered"] == "xla"
    assert decode.compute["param_dtype"] == decode.compute["dtype"] == "bfloat16"
    m = cfg.model
    D, F, NH, KH = m.hidden_size, m.intermediate_size, m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
    slots = 32 + max_new
    per_token = (2 * (m.num_layers * (D * NH + 2 * D * KH + NH * D + 3 * D * F) + m.vocab_size * D)
                 + 4 * m.num_layers * NH * slots)
    tokens_per_chip = rows * samples * (max_new - 1) / decode.chips
    assert decode.flops["matmuls"] == pytest.approx(per_token * tokens_per_chip, rel=0.01)
    # The weights' FSDP split is gathered once per decode call; kept split, it is gathered at every step.
    _, split = compile_generation(cfg, cfg.model, parse_slice("v5p:2x2x1"), rows=rows, prompt_len=20,
                                  max_new=max_new, samples=samples, gather=False)
    assert split.roofline["ici_bytes"] > (max_new - 2) * decode.roofline["ici_bytes"] > 0


def test_cli_decode_reports_every_program_by_name():
    cmd = [sys.executable, "-m", "sailor2_jax.cli", "compile", "--config", "demo_pretrain", "--topology",
           "v5p:2x2x1", "--json", "--decode", "--decode-batch", "4", "--prompt-len", "8", "--max-new-tokens", "4",
           *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    reports = json.loads(done.stdout)
    assert set(reports) == {"train_step", "prefill", "decode"}
    assert all(r["fits"] and r["topology"] == "v5p:2x2x1" for r in reports.values())
    assert "TPU_WORKER_HOSTNAMES" not in done.stderr  # libtpu loaded off a TPU VM without its runtime's warnings


def test_speculative_decoding_compiles_with_both_draft_kinds():
    """`compile --decode --draft-model`: the speculative decode loop for the slice, its trips the rounds that
    max_new - 1 tokens take at the given acceptance; per round the draft runs γ steps (the first over two tokens) and
    the target one step over γ + 1 tokens, so its matmul FLOPs are those rounds' tokens through both models."""
    from sailor2_jax.aot.compile import compile_speculative, tokens_per_round

    cfg = load(TrainConfig, None, TINY)
    m = cfg.model.replace(inserted_layers=[1, 3])
    rows, max_new, gamma, alpha = 4, 16, 3, 0.75
    per_round = tokens_per_round(alpha, gamma)
    assert per_round == pytest.approx((1 - alpha ** 4) / (1 - alpha)) and tokens_per_round(1.0, gamma) == 4
    rounds = -(-(max_new - 1) // per_round)
    D, F, NH, KH = m.hidden_size, m.intermediate_size, m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
    layer = 2 * (D * NH + 2 * D * KH + NH * D + 3 * D * F)
    head = 2 * m.vocab_size * D
    for draft, draft_layers in ((None, 2), (m.replace(num_layers=1, inserted_layers=None), 1)):
        report = compile_speculative(cfg, m, parse_slice("v5p:2x2x1"), draft, draft_tokens=gamma, acceptance=alpha,
                                     rows=rows, prompt_len=20, max_new=max_new)
        assert report.fits and report.batch["rounds"] == rounds
        per_round_flops = ((gamma + 1) * (m.num_layers * layer + head)  # the target over γ + 1 tokens
                           + (gamma + 1) * draft_layers * layer + gamma * head)  # the draft: 2 + (γ - 1) tokens, γ heads
        expected = rounds * rows * per_round_flops / report.chips
        assert report.flops["matmuls"] == pytest.approx(expected, rel=0.1), report.flops
    with pytest.raises(ValueError, match="block-expanded"):
        compile_speculative(cfg, cfg.model, parse_slice("v5p:2x2x1"), None, draft_tokens=gamma, acceptance=alpha,
                            rows=rows, prompt_len=20, max_new=max_new)


def test_the_server_compiles_for_the_slice_and_its_decode_step_flops_are_exact():
    """`compile --serve`: prefill and insert for every prompt bucket, and the decode dispatch of `sailor2-jax serve` for each decode
    batch bucket, full slots last. A dispatch of k steps does k times the forward matmuls of one token per slot
    plus attention over all max_len cache columns."""
    from sailor2_jax.aot.compile import compile_serving

    cfg = load(TrainConfig, None, TINY)
    slots, max_len, k = 8, 64, 2
    reports = compile_serving(cfg, cfg.model, parse_slice("v5p:2x2x1"), slots=slots, max_len=max_len,
                              buckets=[32, 64], decode_steps=k)
    rows = reports[0].batch["prefill_rows"]
    smaller = [f"decode[{b}]" for b in (rows, 2 * rows, 4 * rows) if b < slots]
    assert [r.program for r in reports] == ["prefill[32]", "insert[32]", "prefill[64]", "insert[64]", *smaller,
                                            "decode"]
    assert all(r.fits for r in reports)
    decode = reports[-1]
    m = cfg.model
    D, F, NH, KH = m.hidden_size, m.intermediate_size, m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
    per_token = (2 * (m.num_layers * (D * NH + 2 * D * KH + NH * D + 3 * D * F) + m.vocab_size * D)
                 + 4 * m.num_layers * NH * max_len)
    assert decode.flops["matmuls"] == pytest.approx(per_token * slots * k / decode.chips, rel=0.01)
    assert decode.roofline["tokens_per_s"] > 0 and decode.hbm["arguments"] > 0
