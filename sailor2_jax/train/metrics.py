"""Metrics out: `DIR/metrics.jsonl` (one JSON object per logged step), TensorBoard, and `DIR/metrics.png` (the
run's curves, redrawn when the writer closes), from process 0 only; FLOPs per token and device peak FLOP/s for the
MFU estimate."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from sailor2_jax.config import ModelConfig
from sailor2_jax.languages import LANGUAGES

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

    def write(self, step: int, values: dict[str, float | int | str]) -> None:
        """One line: the step, the wall-clock time (unix seconds) and the values (strings mark events)."""
        if not self.active:
            return
        self.file.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                if not isinstance(v, str):
                    self.tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.active:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
            plot_metrics(self.path, self.path.with_suffix(".png"))


def plot_metrics(jsonl: Path, png: Path) -> None:
    """Loss (train, eval, and per language when logged), learning rate and gradient norm against the step."""
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if _step_of(line) is not None]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        pts = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        return tuple(zip(*pts)) if pts else ((), ())

    fig, (loss, langs, lr, norm) = plt.subplots(1, 4, figsize=(18, 4))
    loss.plot(*series("loss"), label="train")
    if any("eval_loss" in r for r in rows):
        loss.plot(*series("eval_loss"), "o-", label="eval")
    loss.set_title("loss")
    loss.legend()
    for key in sorted({k for r in rows for k in r if k.startswith("loss/")}):
        langs.plot(*series(key), label=key.removeprefix("loss/"), lw=1)
    if langs.lines:
        langs.legend(fontsize=7, ncol=3)
    langs.set_title("loss per language")
    lr.plot(*series("lr"))
    lr.set_title("learning rate")
    norm.plot(*series("grad_norm"))
    norm.set_title("gradient norm (before clipping)")
    for ax in (loss, langs, lr, norm):
        ax.set_xlabel("step")
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.14, top=0.9, wspace=0.25)
    fig.savefig(png, dpi=90)
    plt.close(fig)
