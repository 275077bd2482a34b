"""What every demo stage gets (`Context`) and returns (`StageResult`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.console import Console


@dataclasses.dataclass
class StageResult:
    summary: dict[str, Any]   # the stage's part of summary.json
    checks: dict[str, bool]   # named checks of what it produced; a False fails the demo, naming stage and check


@dataclasses.dataclass
class Context:
    out: Path                                # the demo's output directory (runs/demo)
    console: Console
    results: dict[str, StageResult] = dataclasses.field(default_factory=dict)  # the stages so far, by name

    def run_command(self, argv: list[str]) -> None:
        """`sailor2-jax ARGV` in this process, echoed first as a user would type it; a failing command raises,
        naming it."""
        from sailor2_jax.cli import run_command

        run_command(argv, self.console)

    def train(self, name: str, overrides: list[str], base: str = "demo_pretrain") -> tuple[Any, list[float]]:
        """`sailor2-jax train --config BASE OVERRIDES` into `out/NAME` (no progress bar); (result, logged losses)."""
        from sailor2_jax.config import find_config, load
        from sailor2_jax.train.config import TrainConfig
        from sailor2_jax.train.loop import train

        cfg = load(TrainConfig, find_config("train", base), ["log.progress=false", *overrides])
        result = train(cfg, self.out / name)
        rows = map(json.loads, (self.out / name / "metrics.jsonl").read_text().splitlines())
        losses = [r["loss"] for r in rows if "loss" in r]  # a file source also logs what it read, at the start
        self.console.print(f"{name}: steps {result.resumed_from or 0} → {result.step}, loss {losses[0]:.3f} → "
                           f"{losses[-1]:.3f} ({len(losses)} logged steps; {self.out / name}/metrics.jsonl, curves "
                           "in metrics.png)")
        return result, losses
