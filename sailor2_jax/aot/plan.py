"""Find a training configuration that fits a TPU slice, and the fastest such, with the real compiler.

Search space: every (data, fsdp, context, tensor) mesh of the slice that the model's dimensions and the batch divide,
the remat policies, the micro-batch counts, and the LM head's logits chunk. The context axis (the sequence split,
sharding.py) is searched only for sequences longer than `CONTEXT_FROM` tokens, where one sequence's activations
outgrow a chip; each of its shards must keep Splash-tileable chunks (T/2n a multiple of 512). A real compilation
costs about a minute of two CPU cores at these sizes, so the space is pruned analytically first:
1. `estimate` gives each candidate an HBM estimate per chip (train state, saved activations per remat policy, one
   layer's backward working set, the logits of one chunk) and a step time (FLOPs with each policy's recompute at
   the chip's peak plus HBM traffic at its bandwidth, against the FSDP/data/tensor collectives at its ICI
   bandwidth);
2. candidates whose estimate exceeds the compiler's limit by more than the estimate's margin are dropped; for each
   (mesh, remat, micro-batches) one logits chunk is kept: the smallest that gives the LM head's matmul 8,192 rows
   per chip (so its fp32 logits stay small), else the largest estimated to fit;
3. the rest are compiled (`aot.compile`) remat policy by remat policy, the policy with the fastest estimate
   first, and within a policy the fewest micro-batches first, until one fits; then the next policy; until `keep`
   candidates fit within `headroom` of the compiler's limit or `max_compiles` compilations are spent. Each compilation rescales the estimates of its remat
   policy (compiler total / estimate), and a candidate the rescaled estimate puts over the limit is skipped. The
   answer is ranked by the compiled program's own roofline (`CompileReport.roofline`), not by the estimate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from sailor2_jax.aot.compile import CompileReport, compile_train_step
from sailor2_jax.aot.topology import Slice
from sailor2_jax.config import ModelConfig
from sailor2_jax.model.init import param_count
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.metrics import flops_per_token

REMATS = ("none", "dots_saveable", "save_attention_out", "full")
CHUNKS = (4096, 2048, 1024, 512, 256)
CONTEXT_FROM = 8192  # the sequence length above which context parallelism is searched
ESTIMATE_MARGIN = 1.25  # compile candidates whose estimate is up to this far above the limit: the estimate is rough


@dataclasses.dataclass(frozen=True)
class Candidate:
    data: int
    fsdp: int
    tensor: int
    remat: str
    micro_batches: int
    logits_chunk: int
    context: int = 1

    def overrides(self) -> list[str]:
        return [f"mesh.data={self.data}", f"mesh.fsdp={self.fsdp}", f"mesh.context={self.context}",
                f"mesh.tensor={self.tensor}",
                f"compute.remat={self.remat}", f"data.micro_batches={self.micro_batches}",
                f"objective.logits_chunk={self.logits_chunk}"]

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        return cfg.replace(mesh=cfg.mesh.replace(data=self.data, fsdp=self.fsdp, context=self.context,
                                                 tensor=self.tensor),
                           compute=cfg.compute.replace(remat=self.remat),
                           data=cfg.data.replace(micro_batches=self.micro_batches),
                           objective=cfg.objective.replace(logits_chunk=self.logits_chunk))


@dataclasses.dataclass
class Estimate:
    hbm: float       # bytes per chip
    step_s: float


@dataclasses.dataclass
class PlanResult:
    fitting: list[tuple[Candidate, CompileReport]]   # best compiled roofline first
    compiled: list[tuple[Candidate, CompileReport]]  # every compilation, in the order run
    considered: int                                   # candidates enumerated
    shortlisted: int                                  # candidates left by the analytic pre-filter

    def to_json(self) -> dict[str, Any]:
        row = lambda c, r: {"overrides": c.overrides(), **dataclasses.asdict(c), "report": r.to_json()}
        return {"fitting": [row(c, r) for c, r in self.fitting], "compiled": [row(c, r) for c, r in self.compiled],
                "considered": self.considered, "shortlisted": self.shortlisted}


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidates(cfg: TrainConfig, model: ModelConfig, chips: int, max_tensor: int = 8) -> list[Candidate]:
    """Every mesh/remat/micro-batch/chunk combination the sharding rules and the batch admit."""
    T = cfg.data.seq_len
    chunks = [c for c in CHUNKS if c <= T and T % c == 0] or [T]
    contexts = [n for n in _divisors(chips) if n == 1 or (T > CONTEXT_FROM and T % (2 * n * 512) == 0 and n <= 16)]
    out = []
    for tensor in _divisors(chips):
        if tensor > max_tensor or any(d % tensor for d in (model.num_heads, model.num_kv_heads,
                                                          model.intermediate_size, model.vocab_size)):
            continue
        for context in (n for n in contexts if (chips // tensor) % n == 0):
            for fsdp in _divisors(chips // tensor // context):
                data = chips // tensor // context // fsdp
                if model.hidden_size % (fsdp * context):
                    continue
                for m in _divisors(cfg.data.batch_size):
                    if m > 64 or cfg.data.batch_size % (m * data * fsdp):
                        continue
                    out += [Candidate(data, fsdp, tensor, r, m, c, context) for r in REMATS for c in chunks]
    if not out:
        raise ValueError(f"no (data, fsdp, context, tensor) mesh of {chips} chips divides this model and "
                         f"data.batch_size {cfg.data.batch_size}: fsdp must divide hidden_size {model.hidden_size}, "
                         f"tensor the "
                         f"heads ({model.num_heads}/{model.num_kv_heads}), and data×fsdp the batch")
    return out


def estimate(c: Candidate, cfg: TrainConfig, model: ModelConfig, target: Slice, params: int) -> Estimate:
    """A rough per-chip HBM and step-time estimate (see the module docstring); the compiler has the last word."""
    D, F, L, V = model.hidden_size, model.intermediate_size, model.num_layers, model.vocab_size
    NH, KH = model.num_heads * model.head_dim, model.num_kv_heads * model.head_dim
    t, dp, n = c.tensor, c.data * c.fsdp, c.context
    T = cfg.data.seq_len
    rows = cfg.data.batch_size * (2 if cfg.objective.is_preference else 1) // (c.micro_batches * dp)
    tokens = rows * T // n  # per chip per micro-batch (context parallelism splits each row n ways)
    # fp32 parameters, Adam moments and gradient (sharded over fsdp × context); the embedding table whole along D
    # (the lookup gathers it) and the LM head's gathered copy
    state = 16.0 * params / (c.fsdp * n * t) + 4 * V * D / t
    # bytes per token and layer kept for the backward pass besides the layer's input (2·D): what the backward
    # reads, under each policy (dots_saveable: the q/k/v and gate/up matmul outputs; the o and down projections
    # feed only residual adds, which need nothing saved)
    dots = 2 * (NH + 2 * KH) / t + 4 * F / t
    saved_per_token = {
        "none": dots + 2 * (2 * D + (NH + KH) / t + NH / t + 2 * F / t) + 4 * model.num_heads / t,
        "dots_saveable": dots,
        "save_attention_out": 2 * NH / t + 4 * model.num_heads / t,  # Splash's output and log-sum-exp
        "full": 0.0,
    }[c.remat]
    activations = tokens * L * (2 * D + saved_per_token)
    working = tokens * (8 * D + 12 * F / t + 8 * (NH + 2 * KH) / t)  # one layer's recompute and gradients
    working += rows * T * 2 * KH / t * 2 * 2 * (n > 1)                # context: one layer's gathered K/V and grads
    logits = 1.5 * rows * c.logits_chunk * V / t * 4                   # fp32 logits of a chunk and their gradient
    hbm = state + activations + working + logits

    layer_matmuls = D * (NH + 2 * KH) + NH * D + 3 * D * F  # parameters in one layer's matmuls
    attention_fwd = 4 * NH * T / 2                          # per token and layer, causal
    recompute = {"none": 0.0, "dots_saveable": attention_fwd,
                 "save_attention_out": 2 * layer_matmuls, "full": 2 * layer_matmuls + attention_fwd}[c.remat]
    per_token = flops_per_token(model, T) + 2 * V * D + L * recompute  # the LM head's forward runs twice
    compute_s = per_token * tokens * c.micro_batches / t / target.chip.peak_flops
    # HBM traffic: per token and layer, bytes per unit of activation width moved by each policy's forward and
    # backward (fitted to compiled Sailor2-1B programs for none and dots_saveable; the policies that recompute the
    # forward move about a third more); per token, the LM head's fp32 logits several times over; per
    # micro-batch, the gathered weights and the embedding's and LM head's fp32 gradients
    width = D + F / t + (NH + 2 * KH) / t
    per_width = {"none": 97, "dots_saveable": 80, "save_attention_out": 105, "full": 110}[c.remat]
    traffic = c.micro_batches * (tokens * (L * per_width * width + 30 * V / t)
                                 + 6.0 * params / t + 16.0 * V * D / t)
    hbm_s = traffic / target.chip.hbm_bandwidth
    shard = lambda n: (n - 1) / n
    weights = 2.0 * params / t  # bf16 bytes of the weights a device gathers (FSDP)
    ici = c.micro_batches * (2 * weights + 2 * weights) * shard(c.fsdp * n)  # gather fwd + bwd, reduce-scatter grads
    ici += 2 * 4.0 * params / (c.fsdp * n * t) * shard(c.data)                # all-reduce over data
    # context: K/V all-gathered per layer (forward, remat recompute) and their gradients reduce-scattered
    ici += c.micro_batches * 3 * L * rows * T * 2 * KH / t * 2 * shard(n)
    ici += c.micro_batches * 8 * L * tokens * D * 2 * shard(t)            # tensor-parallel activations
    # ops run one after another, each doing its FLOPs and moving its bytes: the estimate adds the two (the
    # compiled roofline, which takes the larger per op, ranks the answer); collectives run beside them
    return Estimate(hbm, max(compute_s + hbm_s, ici / target.chip.ici_bandwidth))


LM_HEAD_ROWS = 8192  # rows of the LM head's matmul per chip and chunk that keep the MXUs busy


def shortlist(cfg: TrainConfig, model: ModelConfig, target: Slice, headroom: float = 0.9
              ) -> tuple[list[tuple[Candidate, Estimate]], int]:
    """The candidates worth compiling, in the order to compile them (module docstring, steps 1–2), and how many
    were considered."""
    params = param_count(model)
    limit = target.chip.hbm_limit * headroom
    scored = [(c, estimate(c, cfg, model, target, params)) for c in candidates(cfg, model, target.chips)]
    by_key: dict[tuple, list[tuple[Candidate, Estimate]]] = {}
    for c, e in scored:
        if e.hbm <= limit * ESTIMATE_MARGIN:
            by_key.setdefault((c.data, c.fsdp, c.context, c.tensor, c.remat, c.micro_batches), []).append((c, e))
    if not by_key:
        smallest = min(scored, key=lambda s: s[1].hbm)
        raise ValueError(f"nothing fits {target.name}: the smallest estimate is {smallest[1].hbm / 2 ** 30:.1f} GiB "
                         f"per chip ({', '.join(smallest[0].overrides())}) against {limit / 2 ** 30:.1f} GiB "
                         f"({headroom:.0%} of the compiler's limit); use a larger slice or a smaller batch")
    rows = lambda c: cfg.data.batch_size * (2 if cfg.objective.is_preference else 1) // (
        c.micro_batches * c.data * c.fsdp * c.context)
    # per (mesh, remat, micro-batches), the logits chunk: the smallest that gives the LM head's matmul
    # LM_HEAD_ROWS rows (its fp32 logits stay small), else the largest estimated to fit
    ordered = [min((ce for ce in group if rows(ce[0]) * ce[0].logits_chunk >= LM_HEAD_ROWS),
                   key=lambda ce: ce[0].logits_chunk, default=max(group, key=lambda ce: ce[0].logits_chunk))
               for group in by_key.values()]
    # remat policies by their fastest estimate; within one, fewest micro-batches first (bigger matmuls, fewer
    # weight gathers), then the fastest estimate, less tensor parallelism, less memory
    best = {}
    for c, e in ordered:
        best[c.remat] = min(best.get(c.remat, math.inf), e.step_s)
    ordered.sort(key=lambda ce: (best[ce[0].remat], ce[0].remat, ce[0].micro_batches, ce[1].step_s, ce[0].tensor,
                                 ce[1].hbm))
    return ordered, len(scored)


def plan(cfg: TrainConfig, model: ModelConfig, target: Slice, *, keep: int = 3, max_compiles: int = 4,
         headroom: float = 0.9, progress: Callable[[str], None] = lambda _: None) -> PlanResult:
    """The candidates that fit `target` within `headroom` of the compiler's limit, best compiled roofline first."""
    limit = target.chip.hbm_limit * headroom
    ordered, considered = shortlist(cfg, model, target, headroom)
    compiled, fitting = [], []
    scale: dict[str, float] = {}  # compiler total / estimate, per remat policy, from the compilations so far
    for c, e in ordered:
        if len(fitting) >= keep or len(compiled) >= max_compiles:
            break
        if any(f.remat == c.remat for f, _ in fitting):
            continue  # this policy's fewest micro-batches that fit are found: the next policy
        known = scale.get(c.remat)
        if known is not None and e.hbm * known > limit:
            continue  # the compilations so far say this one would not fit
        progress(f"compiling {' '.join(c.overrides())} (estimate {e.hbm / 2 ** 30:.1f} GiB, {e.step_s:.2f} s)")
        try:
            report = compile_train_step(c.apply(cfg), model, target)
        except ValueError as err:  # a candidate the mesh or the rules refuse: the next one
            progress(f"  skipped: {err}")
            continue
        compiled.append((c, report))
        progress("  " + report.verdict())
        if report.hbm.get("compiler_total"):
            scale[c.remat] = max(scale.get(c.remat, 0.0), report.hbm["compiler_total"] / e.hbm)
        if report.fits and report.hbm["headroom_used"] <= headroom:
            fitting.append((c, report))
    fitting.sort(key=lambda cr: cr[1].roofline["step_s"])
    return PlanResult(fitting, compiled, considered, len(ordered))


def no_fit_message(result: PlanResult, target: Slice, headroom: float) -> str:
    tried = "; ".join(f"{' '.join(c.overrides())}: {r.hbm['headroom_used']:.0%}" for c, r in result.compiled)
    return (f"none of the {len(result.compiled)} compiled candidates fits {target.name} within {headroom:.0%} of "
            f"HBM ({tried}); raise --compiles, or use a larger slice")
