"""A training run's directory, read outside the training loop: its step directories, the config saved with each
step, and the parameters (what `open_model`, `export`, a new stage's init and the loop's resume read).

Layout (written by `train/checkpoint.py`): `RUN/checkpoints/<step>/{params,train,config,data}`; a path may name the
run, its `checkpoints/` directory or one step's directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


def as_epath(path: str | Path) -> epath.Path:
    """Local paths made absolute; bucket URLs (gs://...) kept as they are (orbax reads and writes either)."""
    return epath.Path(path) if "://" in str(path) else epath.Path(Path(path).absolute())


def steps(path: str | Path) -> dict[int, epath.Path]:
    """The finished steps of a run (or of its checkpoints/ directory), by step."""
    path = as_epath(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    return dict(sorted((int(p.name), p) for p in root.glob("*") if p.name.isdigit() and (p / "params").is_dir()))


def step_dir(path: str | Path, step: int | None = None) -> epath.Path:
    """A step directory: `path` itself if it is one, else the run's step `step` (default: the latest)."""
    path = as_epath(path)
    if (path / "params").is_dir():
        if step is not None and int(path.name) != step:
            raise ValueError(f"{path} is the checkpoint of step {path.name}, not of step {step}")
        return path
    found = steps(path)
    if not found:
        raise FileNotFoundError(f"no finished checkpoint under {path}")
    if step is None:
        return found[max(found)]
    if step not in found:
        raise FileNotFoundError(f"no finished checkpoint of step {step} under {path} (steps: {sorted(found)})")
    return found[step]


def read_config(path: str | Path) -> dict[str, Any]:
    """{'train': ..., 'model': ...} as saved with the checkpoint."""
    return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir(path) / "config")


def abstract_target(shardings: Any, shapes: Any) -> Any:
    """Restore targets: each shape/dtype (arrays or ShapeDtypeStructs) with the sharding wanted now."""
    return jax.tree.map(lambda sh, s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shardings, shapes)


def restore_params(path: str | Path, target: Any) -> Any:
    """Only the parameters of a checkpoint, onto `target` (abstract arrays with shardings)."""
    return ocp.StandardCheckpointer().restore(step_dir(path) / "params", target)
