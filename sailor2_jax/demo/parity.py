"""The expanded model imported onto the device mesh and run on UDHR text in ten languages: it must compute what
`transformers` computes for the base model (an expansion is the identity at step 0), and the TPU attention kernel
(Splash, run here by Pallas' interpreter) what XLA attention computes."""

from __future__ import annotations

import jax
import numpy as np

from sailor2_jax.config import ComputeConfig, MeshConfig
from sailor2_jax.demo.fixtures import demo_texts, torch_logits
from sailor2_jax.demo.stage import Context, StageResult

TITLE = "import onto the device mesh, run UDHR text in ten languages, compare with transformers"
FP32 = ComputeConfig(dtype="float32", attention="xla")  # parity checks against transformers run in fp32
TOLERANCE = 1e-3  # fp32 logits of two programs (ours, PyTorch's) on the same weights


def logits(model, tokens: np.ndarray) -> np.ndarray:
    """A jitted forward pass of an NNX model (split into graph and state at the jit boundary)."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens))
    return np.asarray(forward(state, tokens))


def run(ctx: Context) -> StageResult:
    from sailor2_jax.model.hf import import_hf
    from sailor2_jax.model.init import with_compute
    from sailor2_jax.sharding import make_mesh

    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    model = import_hf(ctx.out / "expanded", mesh, FP32)
    langs, tokens, segs = demo_texts()
    real = segs.astype(bool)
    with jax.set_mesh(mesh):
        ours = logits(model, tokens)
    identity = float(np.abs(ours - torch_logits(ctx.out / "base", tokens))[real].max())
    ctx.console.print(f"{len(langs)} languages ({', '.join(langs)}), {int(real.sum())} tokens on {mesh.size} "
                      f"devices; expanded model vs base model in transformers: max |Δlogit| = {identity:.2e}")
    rows = mesh.size * (len(tokens) // mesh.size)  # one row per device
    with jax.set_mesh(mesh):
        splash_model = with_compute(model, FP32.replace(attention="splash"))
        splash = float(np.abs(logits(splash_model, tokens[:rows]) - ours[:rows])[real[:rows]].max())
    ctx.console.print(f"Splash attention kernel vs XLA attention on {rows} rows: max |Δlogit| = {splash:.2e}")
    return StageResult(
        {"languages": langs, "devices": mesh.size, "max_abs_logit_diff_expanded_vs_base": identity,
         "max_abs_logit_diff_splash_vs_xla": splash},
        {"the expanded model computes the base model's logits": identity <= TOLERANCE,
         "Splash computes XLA attention's logits": splash <= TOLERANCE})
