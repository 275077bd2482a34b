"""Ahead-of-time compilation of a config's real training step for a TPU slice, on any machine, with no checkpoint.

`compile_train_step` builds the step exactly as `sailor2-jax train` does (`train.step.setup_step` → `compile`), over
a mesh of the slice's compile-only devices, lowers it on abstract inputs (`ShapeDtypeStruct`s with the train state's
and the batch's shardings) and compiles it with the TPU compiler. The platform the step is traced for is the mesh's
(`sharding.target_platform`), so `attention: auto` lowers Splash as a Mosaic kernel as it would on the pod.

The report: per-chip HBM by kind (XLA's memory analysis) and the compiler's own total and limit, whether it fits,
the attention kernel lowered, FLOPs per step with every loop and kernel counted (`aot.hlo`, checked against the
PaLM count 6·N·tokens + attention), and a roofline estimate of step time and MFU from the chip's peak FLOP/s, HBM
and ICI bandwidths: every op of the program at its own bound (its FLOPs at peak or its HBM bytes at full bandwidth,
whichever takes longer), one after another, with the collectives beside them (asynchronous) unless they take
longer — a lower bound on the step time (no op reaches peak in practice), hence an upper bound on MFU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from sailor2_jax.aot.hlo import HloModule
from sailor2_jax.aot.topology import HbmVerdict, Slice
from sailor2_jax.config import ModelConfig
from sailor2_jax.model.kernels import splash_block
from sailor2_jax.sharding import batch_sharding, make_mesh
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.metrics import flops_per_token
from sailor2_jax.train.objectives import LM_KEYS, Objective

# Splash kernels by name: FLOPs per (query, key) pair and head dimension, and which output is the attention
# result ([rows, heads, T, H], in the order jax's kernel declares its outputs; rows absent when there is one).
# Forward: QKᵀ and PV (2 matmuls); dq recomputes QKᵀ, then dO·Vᵀ and dS·K (3); dkv recomputes QKᵀ, then Pᵀ·dO,
# dO·Vᵀ and dSᵀ·Q (4). Every kernel runs over all local query heads.
SPLASH_KERNELS = {"splash_mha_fwd": (4, 3), "splash_mha_dq": (6, 1), "splash_mha_dkv": (8, 3)}


def splash_flops(name: str, outputs: tuple[tuple[int, ...], ...], q_heads: int, seq_len: int, head_dim: int,
                 context: int = 1, ring: bool = False) -> float | None:
    """FLOPs of one Splash kernel execution (causal blocks only), or None for a kernel this does not know.

    Under context parallelism over n devices a shard runs two kernels of C = T/2n queries, chunks i and 2n−1−i,
    whose masks leave (i+1)·C and (2n−i)·C keys: 2n·C² causal pairs together whatever i is, so n·C² each on
    average. Ring attention (`ring`) runs n kernels per shard of 2·C² pairs each (model/ring.py: its own chunks
    causal over 2C × 2C, then 2C × C or C × 2C unmasked): the same 2n·C² in all."""
    kind = next((k for k in SPLASH_KERNELS if name.startswith(k)), None)
    if kind is None:
        return None
    per_pair, index = SPLASH_KERNELS[kind]
    dims = outputs[index] if len(outputs) > index else ()
    if len(dims) not in (3, 4):
        return None
    rows = dims[0] if len(dims) == 4 else 1
    if context > 1:
        C = seq_len // (2 * context)
        if dims[-1] != head_dim or dims[-2] not in (C,) + tuple(k * C for k in range(1, 2 * context + 1)):
            return None
        return per_pair * rows * q_heads * (2 if ring else context) * C * C * head_dim
    if dims[-2:] != (seq_len, head_dim):
        return None
    blocks = seq_len // (splash_block(seq_len) or seq_len)
    causal = (blocks + 1) / (2 * blocks)  # share of (q, k) blocks the causal mask leaves to compute
    return per_pair * rows * q_heads * seq_len * seq_len * head_dim * causal


@dataclasses.dataclass
class CompileReport:
    program: str                          # train_step, or the generation engine's prefill / decode
    topology: str
    chips: int
    mesh: dict[str, int]
    batch: dict[str, Any]                 # batch_size, seq_len, micro_batches, logits_chunk (generation: its shape)
    compute: dict[str, Any]               # the ComputeConfig compiled
    fits: bool
    hbm: dict[str, Any]                   # per chip, bytes
    attention: dict[str, Any] | None = None
    flops: dict[str, Any] | None = None   # per chip per step
    roofline: dict[str, Any] | None = None
    compile_s: float = 0.0
    refusal: str | None = None            # the compiler's message when it refused the program

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def verdict(self) -> str:
        """One line: fits or not, HBM against the limit, and the roofline."""
        h = self.hbm
        line = (f"{'fits' if self.fits else 'does not fit'}: {(h.get('compiler_total') or 0) / 2 ** 30:.1f} of "
                f"{(h.get('compiler_limit') or 0) / 2 ** 30:.2f} GiB ({h.get('headroom_used', 0):.0%})")
        if self.roofline:
            r = self.roofline
            line += (f", step ≥ {r['step_s']:.3f} s ({r['bound']}-bound), {r['tokens_per_s']:,.0f} tokens/s, "
                     f"MFU ≤ {r['mfu'] * 100:.1f} %")
        return line + (f" — {self.refusal}" if self.refusal else "")

    def summary(self) -> str:
        gib = lambda b: "?" if b is None else f"{b / 2 ** 30:.2f} GiB"
        h = self.hbm
        lines = [f"{self.program} on {self.topology}: {self.chips} chips, mesh {self.mesh}, batch {self.batch}",
                 f"compute {self.compute}",
                 f"fits: {'yes' if self.fits else 'NO'}  (compiler: {gib(h.get('compiler_total'))} of "
                 f"{gib(h.get('compiler_limit'))} per chip, {h.get('headroom_used', 0) * 100:.1f} %)"]
        if self.refusal:
            lines.append(f"refused: {self.refusal}")
            return "\n".join(lines)
        lines.append(f"HBM per chip (memory analysis): arguments {gib(h['arguments'])}, temporaries "
                     f"{gib(h['temporaries'])}, outputs {gib(h['outputs'])} (aliased with arguments "
                     f"{gib(h['aliased'])}), code {gib(h['code'])}")
        a, f, r = self.attention, self.flops, self.roofline
        lines.append(f"attention: {a['lowered']} (requested {a['requested']}; kernel calls per step: "
                     f"{a['kernel_calls'] or 'none'})")
        if a["kernels_not_counted"]:
            lines.append(f"kernels whose FLOPs are not counted: {a['kernels_not_counted']}")
        lines.append(f"FLOPs per chip per step: {f['total']:.4g} (matmuls {f['matmuls']:.4g} + kernels "
                     f"{f['kernels']:.4g}); PaLM model FLOPs {f['model']:.4g} (ratio {f['ratio_to_model']:.3f}); "
                     f"XLA cost_analysis alone {f['cost_analysis']:.4g}")
        lines.append(f"roofline: step ≥ {r['step_s']:.3f} s ({r['bound']}-bound; ops bound by FLOPs "
                     f"{r['compute_bound_ops_s']:.3f} s + by HBM {r['memory_bound_ops_s']:.3f} s, collectives "
                     f"{r['ici_s']:.3f} s; all FLOPs at peak {r['compute_s']:.3f} s, all HBM traffic "
                     f"{r['hbm_s']:.3f} s), {r['tokens_per_s']:,.0f} tokens/s, MFU ≤ {r['mfu'] * 100:.1f} %")
        lines.append(f"compiled in {self.compile_s:.1f} s")
        return "\n".join(lines)


def abstract_batch(cfg: TrainConfig, mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch the loop feeds this config's objective, as sharded shapes: LM rows (pre-training rows carry their
    languages), or chosen/rejected pairs (plus precomputed reference log-probs where the objective reads them)."""
    B, T = cfg.data.batch_size, cfg.data.seq_len
    rows, per_pair = batch_sharding(mesh, 2), batch_sharding(mesh, 1)
    if not cfg.objective.is_preference:
        keys = LM_KEYS + (("languages",) if cfg.objective.kind == "pretrain" else ())
        return {k: jax.ShapeDtypeStruct((B, T), jnp.int32, sharding=rows) for k in keys}
    batch = {f"{side}_{k}": jax.ShapeDtypeStruct((B, T), jnp.int32, sharding=rows)
             for side in ("chosen", "rejected") for k in LM_KEYS}
    if Objective(cfg.objective).reference in ("precompute", "cache"):
        batch |= {k: jax.ShapeDtypeStruct((B,), jnp.float32, sharding=per_pair)
                  for k in ("ref_chosen_logps", "ref_rejected_logps")}
    return batch


def resolve_model(cfg: TrainConfig, model: str | None) -> ModelConfig:
    """The architecture: `model` (a packaged model name, a model YAML, an HF directory or its config.json), else
    what the config names (`model`, init.hf_dir's config.json, init.checkpoint's saved one)."""
    from sailor2_jax.config import load_model_config
    from sailor2_jax.model.hf import read_hf_config

    if model:
        path = Path(model)
        if path.name == "config.json" or (path.is_dir() and (path / "config.json").is_file()):
            return read_hf_config(path.parent if path.name == "config.json" else path)
        return load_model_config(model)
    from sailor2_jax.train.init import architecture

    try:
        return architecture(cfg)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; to compile without it, name the architecture with --model (e.g. "
                                "sailor2-1b, a model YAML, or an HF config.json)") from None


def compile_train_step(cfg: TrainConfig, model_cfg: ModelConfig, target: Slice) -> CompileReport:
    """Compile cfg's training step for `target` and report memory, FLOPs and a roofline estimate (see module)."""
    from sailor2_jax.model.run_dir import abstract_target
    from sailor2_jax.train.step import setup_step

    mesh = make_mesh(cfg.mesh, target.devices())
    M = cfg.data.micro_batches
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.data.batch_size % (data_parallel * M):
        raise ValueError(f"data.batch_size ({cfg.data.batch_size}) must be a multiple of the data-parallel devices "
                         f"({data_parallel}) times data.micro_batches ({M})")
    setup = setup_step(cfg, model_cfg, mesh)
    objective = Objective(cfg.objective)
    with_reference = objective.reference == "model"
    step = setup.compile(objective, mesh, M, with_reference=with_reference)
    state = abstract_target(setup.shardings, setup.abstract_state())
    ref = None
    if with_reference:  # the loop's frozen reference copy is in compute dtype
        ref = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, jnp.dtype(cfg.compute.dtype), sharding=sh),
                           setup.shapes, setup.shardings.params)
    report = CompileReport(
        program="train_step", topology=target.topology, chips=target.chips, mesh=dict(mesh.shape),
        batch={"batch_size": cfg.data.batch_size, "seq_len": cfg.data.seq_len, "micro_batches": M,
               "logits_chunk": cfg.objective.logits_chunk},
        compute=cfg.compute.model_dump(), fits=False, hbm={})
    # An abstract mesh, not jax.set_mesh: compile-only devices hold no arrays (the Splash mask tables are built
    # at trace time); the shardings still name the slice's devices, and their platform picks the kernels.
    t0 = time.perf_counter()
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        lowered = step.lower(state, abstract_batch(cfg, mesh), ref)
    tokens = cfg.data.batch_size * cfg.data.seq_len * (2 if cfg.objective.is_preference else 1)
    return compile_lowered(lowered, report, target, model_cfg, tensor=mesh.shape["tensor"], seq_len=cfg.data.seq_len,
                           context=mesh.shape["context"], tokens=tokens,
                           model_flops=flops_per_token(model_cfg, cfg.data.seq_len) * tokens,
                           started=t0)


def compile_lowered(lowered: jax.stages.Lowered, report: CompileReport, target: Slice, model_cfg: ModelConfig, *,
                    tensor: int, seq_len: int, tokens: int, model_flops: float, started: float,
                    runtime_trips: int | None = None, context: int = 1) -> CompileReport:
    """Compile a program lowered for `target` and fill `report`: the compiler's verdict (or its refusal), memory by
    kind, the kernels lowered, FLOPs through every loop (a loop that stops on a runtime value runs `runtime_trips`
    times), and the roofline for `tokens` per call whose model FLOPs (all chips) are `model_flops`. The training
    step and the generation programs all go through here."""
    verdict = HbmVerdict()
    try:
        with verdict:
            compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        verdict.parse_refusal(str(e))
        limit = verdict.limit or target.chip.hbm_limit
        report.compile_s = time.perf_counter() - started
        report.refusal = str(e).splitlines()[0]
        report.hbm = {"compiler_total": verdict.program, "compiler_limit": limit,
                      "headroom_used": (verdict.program or 0) / limit}
        return report
    report.compile_s = time.perf_counter() - started
    report.hbm = _hbm(compiled.memory_analysis(), verdict, target)
    report.fits = report.hbm["compiler_total"] <= report.hbm["compiler_limit"]

    chip = target.chip
    q_heads = model_cfg.num_heads // tensor
    ring = context > 1 and report.compute.get("context_attention") == "ring"  # its kernels' shapes differ
    cost = HloModule(compiled.as_text(), peak_flops=chip.peak_flops, hbm_bandwidth=chip.hbm_bandwidth,
                     kernel_flops=lambda name, outputs: splash_flops(name, outputs, q_heads, seq_len,
                                                                     model_cfg.head_dim, context, ring),
                     runtime_trips=runtime_trips).cost()
    calls, unknown = {}, {}
    for (name, outputs), n in cost.kernels.items():
        calls[name] = calls.get(name, 0) + int(n)
        if splash_flops(name, outputs, q_heads, seq_len, model_cfg.head_dim, context, ring) is None:
            unknown[name] = unknown.get(name, 0) + int(n)
    report.attention = {"requested": report.compute["attention"],
                        "lowered": "splash (Mosaic kernel)" if any(k.startswith("splash") for k in calls) else "xla",
                        "kernel_calls": calls, "kernels_not_counted": unknown}
    model_per_chip = model_flops / target.chips
    total = cost.flops + cost.kernel_flops
    raw = compiled.cost_analysis()
    raw = raw[0] if isinstance(raw, (list, tuple)) else raw
    report.flops = {"total": total, "matmuls": cost.flops, "kernels": cost.kernel_flops, "model": model_per_chip,
                    "ratio_to_model": total / model_per_chip, "cost_analysis": float(raw.get("flops", math.nan))}
    ici_s = cost.ici_bytes / chip.ici_bandwidth
    ops_s = cost.compute_bound_s + cost.memory_bound_s
    step_s = max(ops_s, ici_s)  # collectives run asynchronously, beside the ops
    bound = ("ici" if ici_s > ops_s else "compute" if cost.compute_bound_s >= cost.memory_bound_s else "hbm")
    report.roofline = {"step_s": step_s, "bound": bound,
                       "compute_s": total / chip.peak_flops, "hbm_s": cost.hbm_bytes / chip.hbm_bandwidth,
                       "ici_s": ici_s, "compute_bound_ops_s": cost.compute_bound_s,
                       "memory_bound_ops_s": cost.memory_bound_s,
                       "hbm_bytes": cost.hbm_bytes, "ici_bytes": cost.ici_bytes,
                       # every memory space, as XLA's cost analysis counts (it sees each loop body once)
                       "bytes_accessed": cost.bytes_accessed,
                       "cost_analysis_bytes": float(raw.get("bytes accessed", math.nan)),
                       "tokens_per_s": tokens / step_s, "mfu": model_per_chip / (step_s * chip.peak_flops)}
    return report


def _abstract_params(generator) -> Any:
    """A generator's parameters as shaped, sharded stand-ins (nothing allocated)."""
    return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), generator.params,
                        generator.param_shardings)


def _prompt_args(mesh: jax.sharding.Mesh, rows: int, prompt_len: int, samples: int) -> tuple:
    """The prefill program's inputs as stand-ins: prompt ids, prompt lengths, per-sample seeds, the base seed."""
    rows_in, prompts_in = (batch_sharding(mesh, n) for n in (1, 2))
    scalar = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return (jax.ShapeDtypeStruct((rows, prompt_len), jnp.int32, sharding=prompts_in),
            jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=rows_in),
            jax.ShapeDtypeStruct((rows * samples,), jnp.uint32, sharding=rows_in),
            jax.ShapeDtypeStruct((), jnp.uint32, sharding=scalar))


def compile_generation(cfg: TrainConfig, model_cfg: ModelConfig, target: Slice, *, rows: int, prompt_len: int,
                       max_new: int, samples: int = 1, gather: bool = True,
                       prefill_chunk: int | None = None) -> list[CompileReport]:
    """Compile the generation engine's two programs (`generate.engine.Generator.programs`: prefill, then the
    decode loop) for `target` on cfg's mesh, as `generate` and on-policy sampling run them where the policy trains:
    weights in the compute dtype, `rows` prompts of `prompt_len` slots (a length bucket), `samples` per prompt,
    `max_new` new tokens (the loop's FLOPs are counted for all of them: no row stops early), the weights gathered
    over FSDP once per decode call unless `gather` is off (`Generator`). Model FLOPs are the
    forward third of the PaLM count, attention over the prompt (prefill) or over every cache slot (decode)."""
    from sailor2_jax.generate.engine import Generator, length_bucket
    from sailor2_jax.tokenizer import DEFAULT_EOS_IDS
    from sailor2_jax.generate.sampling import SamplingConfig
    from sailor2_jax.model.init import abstract_model

    if max_new < 2:
        raise ValueError(f"--max-new-tokens must be at least 2 to compile a decode loop, got {max_new}")
    mesh = make_mesh(cfg.mesh, target.devices())
    compute = cfg.compute.model_copy(update={"param_dtype": cfg.compute.dtype, "remat": "none"})
    generator = Generator(abstract_model(model_cfg, compute), mesh, gather=gather, prefill_chunk=prefill_chunk)
    if rows % generator.data_parallel:
        raise ValueError(f"--decode-batch ({rows}) must be a multiple of the data-parallel devices "
                         f"({generator.data_parallel})")
    prompt_len = length_bucket(prompt_len)
    prefill, decode = generator.programs(rows, prompt_len, samples, max_new, SamplingConfig(), DEFAULT_EOS_IDS)
    params = _abstract_params(generator)
    prompt_args = _prompt_args(mesh, rows, prompt_len, samples)
    scalar = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    slots = prompt_len + max_new
    shape = {"rows": rows, "samples": samples, "prompt_len": prompt_len, "max_new_tokens": max_new,
             "gathered_weights": gather}
    reports = []
    for program, fn, args, tokens, context, trips in (
            ("prefill", prefill, prompt_args, rows * prompt_len, prompt_len, None),
            ("decode", decode, None, rows * samples * (max_new - 1), slots, max_new - 1)):
        report = CompileReport(program=program, topology=target.topology, chips=target.chips, mesh=dict(mesh.shape),
                               batch=shape, compute=compute.model_dump(), fits=False, hbm={})
        t0 = time.perf_counter()
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            if args is None:  # the decode loop starts from what prefill returns
                args = (jax.eval_shape(prefill, params, *prompt_args), jax.ShapeDtypeStruct((), jnp.int32,
                                                                                           sharding=scalar))
            lowered = fn.lower(params, *args)
        reports.append(compile_lowered(lowered, report, target, model_cfg, tensor=mesh.shape["tensor"],
                                       seq_len=context, tokens=tokens, started=t0, runtime_trips=trips,
                                       model_flops=flops_per_token(model_cfg, context) / 3 * tokens))
    return reports


def tokens_per_round(acceptance: float, gamma: int) -> float:
    """Expected tokens a speculative round yields when each draft token is accepted with probability α
    (Leviathan et al.): (1 − α^(γ+1)) / (1 − α)."""
    if not 0 <= acceptance <= 1:
        raise ValueError(f"acceptance must be in [0, 1], got {acceptance}")
    return gamma + 1.0 if acceptance == 1 else (1 - acceptance ** (gamma + 1)) / (1 - acceptance)


def compile_speculative(cfg: TrainConfig, model_cfg: ModelConfig, target: Slice, draft_cfg: ModelConfig | None, *,
                        draft_tokens: int, acceptance: float, rows: int, prompt_len: int, max_new: int,
                        samples: int = 1, gather: bool = True) -> CompileReport:
    """Compile the speculative decode loop (`generate.speculative.SpeculativeGenerator`: γ draft steps and one
    (γ+1)-token target step per round) for `target` on cfg's mesh, with `draft_cfg`'s model as the draft or, when
    None, the self draft (`model_cfg.inserted_layers` skipped). Its roofline covers the rounds that `max_new − 1`
    tokens take at `acceptance` (tokens per round from `tokens_per_round`); model FLOPs count the target's tokens
    only (the useful work), so MFU compares with the plain decode loop's."""
    from sailor2_jax.generate.engine import length_bucket
    from sailor2_jax.generate.sampling import SamplingConfig
    from sailor2_jax.generate.speculative import SpeculativeGenerator
    from sailor2_jax.model.init import abstract_model
    from sailor2_jax.tokenizer import DEFAULT_EOS_IDS

    per_round = tokens_per_round(acceptance, draft_tokens)
    rounds = max(1, math.ceil((max_new - 1) / per_round))
    mesh = make_mesh(cfg.mesh, target.devices())
    compute = cfg.compute.model_copy(update={"param_dtype": cfg.compute.dtype, "remat": "none"})
    draft = None if draft_cfg is None else abstract_model(draft_cfg, compute)
    generator = SpeculativeGenerator(abstract_model(model_cfg, compute), mesh, draft, draft_tokens=draft_tokens,
                                     gather=gather)
    if rows % generator.data_parallel:
        raise ValueError(f"--decode-batch ({rows}) must be a multiple of the data-parallel devices "
                         f"({generator.data_parallel})")
    prompt_len = length_bucket(prompt_len)
    prefill, advance = generator.programs(rows, prompt_len, samples, max_new, SamplingConfig(), DEFAULT_EOS_IDS)
    params = _abstract_params(generator)
    draft_params = params if generator.draft_gen is None else _abstract_params(generator.draft_gen)
    prompt_args = _prompt_args(mesh, rows, prompt_len, samples)
    scalar = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    slots = prompt_len + max_new + draft_tokens + 1
    tokens = rows * samples * (max_new - 1)
    shape = {"rows": rows, "samples": samples, "prompt_len": prompt_len, "max_new_tokens": max_new,
             "gathered_weights": gather, "draft": generator.description, "draft_tokens": draft_tokens,
             "acceptance": acceptance, "tokens_per_round": round(per_round, 3), "rounds": rounds}
    report = CompileReport(program="speculative decode", topology=target.topology, chips=target.chips,
                           mesh=dict(mesh.shape), batch=shape, compute=compute.model_dump(), fits=False, hbm={})
    t0 = time.perf_counter()
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        state = jax.eval_shape(prefill, params, *prompt_args)
        lowered = advance.jitted.lower(params, draft_params, state, jax.ShapeDtypeStruct((), jnp.int32,
                                                                                         sharding=scalar))
    return compile_lowered(lowered, report, target, model_cfg, tensor=mesh.shape["tensor"], seq_len=slots,
                           tokens=tokens, started=t0, runtime_trips=rounds,
                           model_flops=flops_per_token(model_cfg, slots) / 3 * tokens)


def compile_serving(cfg: TrainConfig, model_cfg: ModelConfig, target: Slice, *, slots: int, max_len: int,
                    buckets: list[int] | None = None, decode_steps: int | None = None) -> list[CompileReport]:
    """Compile the server's programs (`serve.programs.SlotPrograms`: a prefill per prompt bucket, insert, and the
    decode dispatch — `decode_steps` steps, default the server's — of each decode batch bucket, the full slots
    last as "decode") for `target` on cfg's mesh, weights in the compute dtype and gathered along FSDP as the
    server holds them (plus the per-layer copies the decode step reads). The decode report's HBM is the server's
    resident set (weights, layer copies, the slots' KV cache); its roofline counts k steps for all `slots` rows
    over `max_len` cache columns (attention reads every column), so its tokens/s is the output rate at full slots."""
    decode_steps = decode_steps or DEFAULT_DECODE_STEPS
    from sailor2_jax.model.init import abstract_model
    from sailor2_jax.serve.engine import DEFAULT_DECODE_STEPS, prompt_buckets
    from sailor2_jax.serve.programs import EOS_IDS, SlotPrograms

    mesh = make_mesh(cfg.mesh, target.devices())
    compute = cfg.compute.model_copy(update={"param_dtype": cfg.compute.dtype, "remat": "none"})
    programs = SlotPrograms(abstract_model(model_cfg, compute), mesh, slots=slots, max_len=max_len,
                            decode_steps=decode_steps, place=False)

    def shaped(tree, shardings):
        return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), tree, shardings)
    params = shaped(programs.abstract_params, programs.param_shardings)
    scalar = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rows_in = batch_sharding(mesh, 1)
    R = programs.rows
    shape = {"slots": slots, "max_len": max_len, "prefill_rows": R}
    reports = []

    def lower(program: str, fn, args, tokens: int, context: int, batch: dict, trips: int | None = None) -> None:
        report = CompileReport(program=program, topology=target.topology, chips=target.chips, mesh=dict(mesh.shape),
                               batch={**shape, **batch}, compute=compute.model_dump(), fits=False, hbm={})
        t0 = time.perf_counter()
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            lowered = fn.lower(*args)
        reports.append(compile_lowered(lowered, report, target, model_cfg, tensor=mesh.shape["tensor"],
                                       seq_len=context, tokens=tokens, started=t0, runtime_trips=trips,
                                       model_flops=flops_per_token(model_cfg, context) / 3 * tokens))

    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        layers = shaped(jax.eval_shape(programs.unstack, params), programs.layer_shardings)
        state = shaped(jax.eval_shape(programs.make_state), programs.state_shardings())
    i32 = jnp.int32
    scalars = [jax.ShapeDtypeStruct((), dt, sharding=scalar) for dt in
               (i32, i32, jnp.uint32, i32, jnp.float32, i32, jnp.float32, jnp.float32, jnp.bool_, i32)]
    eos = jax.ShapeDtypeStruct((EOS_IDS,), i32, sharding=scalar)
    for bucket in buckets or prompt_buckets(max_len):  # insert reads the prompt: one program per bucket too
        prompt = (jax.ShapeDtypeStruct((R, bucket), i32, sharding=batch_sharding(mesh, 2)),
                  jax.ShapeDtypeStruct((R,), i32, sharding=rows_in))
        lower(f"prefill[{bucket}]", programs.prefill, (params, layers, *prompt), R * bucket, bucket,
              {"prompt_len": bucket})
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            prefix, logits = jax.eval_shape(programs.prefill, params, layers, *prompt)
        lower(f"insert[{bucket}]", programs.insert, (state, prefix, logits, *prompt, *scalars, eos), 1, max_len,
              {"prompt_len": bucket})
    want_top = jax.ShapeDtypeStruct((), jnp.bool_, sharding=scalar)
    k = programs.decode_steps
    for b in programs.batch_buckets:  # k steps of b slots: the roofline of k tokens per slot
        chosen = (jax.ShapeDtypeStruct((b,), i32, sharding=rows_in), jax.ShapeDtypeStruct((b,), jnp.bool_,
                                                                                           sharding=rows_in))
        lower("decode" if b == slots else f"decode[{b}]", programs.decode, (params, layers, state, *chosen, want_top),
              b * k, max_len, {"decode_slots": b, "decode_steps": k}, trips=k)
    return reports


def _hbm(memory: Any, verdict: HbmVerdict, target: Slice) -> dict[str, Any]:
    """Per-chip bytes: XLA's memory analysis by kind, and the compiler's own total against its limit (from its
    log; where the log holds none, the analysis' total against the chip's known limit)."""
    analysis_total = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
                      + memory.temp_size_in_bytes + memory.generated_code_size_in_bytes)
    from_log = verdict.total is not None and verdict.limit is not None
    total = verdict.total if from_log else analysis_total
    limit = verdict.limit if from_log else target.chip.hbm_limit
    return {"arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
            "aliased": memory.alias_size_in_bytes, "temporaries": memory.temp_size_in_bytes,
            "code": memory.generated_code_size_in_bytes, "analysis_total": analysis_total,
            "compiler_program": verdict.program, "compiler_total": total, "compiler_limit": limit,
            "headroom_used": total / limit, "source": "compiler log" if from_log else "memory analysis"}
