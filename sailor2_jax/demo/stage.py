"""Stand-in of the lead's `sailor2_jax/demo/stage.py` (issue 22), so the judge stage can be tested on this branch;
the lead's module replaces it at merge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StageResult:
    summary: dict
    checks: dict[str, bool]


@dataclass
class Context:
    out: Path
    console: object
    results: dict[str, StageResult] = field(default_factory=dict)

    def run_command(self, argv: list[str]) -> None:
        from sailor2_jax.cli import run_command
        run_command(argv, self.console)
