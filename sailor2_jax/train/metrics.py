"""Metrics out: `DIR/metrics.jsonl` (one JSON object per logged step) and TensorBoard, from process 0 only; FLOPs
per token and device peak FLOP/s for the MFU estimate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from sailor2_jax.config import ModelConfig
from sailor2_jax.data.config import LANGUAGES

# Dense bf16 peak FLOP/s per device, matched against `device_kind` (first match wins).
PEAK_FLOPS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("TPU v6", 918e12), ("TPU v5 lite", 197e12),
              ("TPU v5e", 197e12), ("TPU v5", 459e12), ("TPU v4", 275e12))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, PaLM convention: 6 x matmul parameters (LM head included) + 12·L·N·H·T attention."""
    D, N, K, H, F, L = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size,
                        cfg.num_layers)
    per_layer = D * N * H + 2 * D * K * H + N * H * D + 3 * D * F
    return 6.0 * (L * per_layer + cfg.vocab_size * D) + 12.0 * L * N * H * seq_len


def peak_flops(override: float | None = None) -> float | None:
    """Peak FLOP/s of all devices together, or None where unknown (CPU)."""
    if override:
        return override * jax.device_count()
    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_FLOPS:
        if name.lower() in kind.lower():
            return flops * jax.device_count()
    return None


def flatten(metrics: dict[str, Any]) -> dict[str, float | int]:
    """Host scalars; the per-language loss vector becomes `loss/<lang>` for the languages present."""
    out: dict[str, float | int] = {}
    for k, v in metrics.items():
        v = np.asarray(v)
        if k == "lang_loss":
            out |= {f"loss/{lang}": float(x) for lang, x in zip(LANGUAGES, v) if math.isfinite(x)}
        elif v.dtype == bool:
            out[k] = bool(v)
        elif np.issubdtype(v.dtype, np.integer):
            out[k] = int(v)
        else:
            out[k] = float(v)
    return out


def _step_of(line: str) -> int | None:
    """The step of a metrics line; None for a line torn by a killed process."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class MetricsWriter:
    """Appends to metrics.jsonl; on a resume from step `resume_step` it first drops the lines of later steps (the
    interrupted run logged them; the resumed run logs them again), so each step appears once."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None):
        self.active = jax.process_index() == 0
        self.path = Path(output_dir) / "metrics.jsonl"
        self.tb = None
        if self.active:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None and self.path.is_file():
                kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                        if (s := _step_of(line)) is not None and s <= resume_step]
                tmp = self.path.with_suffix(".jsonl.tmp")
                tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
                tmp.replace(self.path)
            self.file = self.path.open("a", encoding="utf-8")
            if tensorboard:
                from tensorboardX import SummaryWriter
                self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def write(self, step: int, values: dict[str, float | int]) -> None:
        if not self.active:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.active:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
