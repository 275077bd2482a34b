"""The device mesh and the one table that maps logical axis names onto it.

Parameters and activations name their axes logically where they are defined (`"embed"`, `"q_heads"`, `"batch"` ...).
`RULES` is the only place that says which mesh axis each name is split over. Logical names are resolved exactly
once, here: resolving already-resolved specs again would silently replicate everything (stack.md).

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism with parameters and optimiser state sharded),
`context` (the sequence split across devices: context parallelism, size 1 unless a run asks), `tensor` (heads, MLP
width and vocabulary split across devices).

Context parallelism splits the sequence of every activation over `context`. Causal attention gives late tokens more
work than early ones, so the model runs each sequence in a load-balanced order (`balanced_order`): of 2n equal
chunks, shard i holds chunks i and 2n−1−i (Llama 3's all-gather context parallelism), and every shard has the same
number of (query, key) pairs to compute. Segment ids and positions are permuted with their tokens, so masks stay
exact; the model restores the natural order before the LM head, so losses, masks and loaders never see it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from sailor2_jax.config import MeshConfig

MESH_AXES = ("data", "fsdp", "context", "tensor")

MeshAxes = str | tuple[str, ...] | None

# logical axis -> mesh axis (or axes). Parameters: the model dimension is FSDP-sharded, heads/MLP/vocab are tensor-
# sharded; the model dimension is split over `context` too (its devices hold different tokens of the same rows, so they
# are data-parallel for the weights). Activations: the batch is split over every data-parallel axis, the sequence
# over `context`.
RULES: dict[str, MeshAxes] = {
    # parameters
    "vocab": "tensor",
    "embed": ("fsdp", "context"),
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "layers": None,
    "norm": None,
    # activations
    "batch": ("data", "fsdp"),
    "seq": "context",
    "act_embed": None,
    "act_heads": "tensor",
    "act_kv_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
    # RegMix: proxies stacked on a leading axis, each whole on one device (regmix/program.py)
    "proxy": "data",
    # decoding: the KV cache [layers, batch, cache_seq, act_kv_heads, head_dim] (model/qwen2.py KVCache)
    "cache_seq": None,
}


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, context, tensor) mesh over `devices` (default: all); a -1 size takes what the others leave."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [cfg.data, cfg.fsdp, cfg.context, cfg.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: {len(devices)} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                         f"{len(devices)} are available")
    # Auto axes: GSPMD propagates shardings from our constraints (Explicit is jax.make_mesh's default now).
    try:
        return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
    except NotImplementedError:
        # A TPU torus has no device order for this shape (e.g. data=2, fsdp=32 on 4x4x4) that keeps every mesh
        # axis within physical axes: let mesh axes span parts of physical ones.
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
        return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def target_platform() -> str:
    """The platform the program being traced will run on: the current mesh's devices' (`tpu` when lowering for a
    TPU topology on a CPU machine), else the default backend's."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.abstract_device is not None:
        return mesh.abstract_device.platform
    return jax.default_backend()


def context_size() -> int:
    """The size of the current mesh's `context` axis (1 outside a mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty or "context" not in mesh.axis_names else mesh.shape["context"]


def axes_size(mesh: Mesh | jax.sharding.AbstractMesh, axes: MeshAxes) -> int:
    """How many devices mesh axes `axes` (a name, a tuple of names, or None) span together; an axis the mesh lacks
    counts 1."""
    names = (axes,) if isinstance(axes, str) else (axes or ())
    return int(np.prod([mesh.shape[a] for a in names if a in mesh.axis_names]))


def logical_size(name: str, mesh: Mesh | None = None, rules: Mapping[str, MeshAxes] = RULES) -> int:
    """How many ways `mesh` (default: the current one; 1 outside a mesh) splits logical axis `name`."""
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    return 1 if mesh.empty else axes_size(mesh, rules[name])


def balanced_order(seq_len: int, n: int) -> np.ndarray:
    """The load-balanced order of a sequence split n ways: the sequence's 2n chunks as [0, 2n−1, 1, 2n−2, ...], so
    contiguous shard i holds chunks i and 2n−1−i. `x[:, order]` puts a sequence in it; `x[:, argsort(order)]` back."""
    if seq_len % (2 * n):
        raise ValueError(f"context parallelism over {n} devices needs a sequence length divisible by {2 * n} "
                         f"(2 chunks per device), got {seq_len}")
    c = seq_len // (2 * n)
    chunks = [j for i in range(n) for j in (i, 2 * n - 1 - i)]
    return np.concatenate([np.arange(j * c, (j + 1) * c) for j in chunks])


def logical_to_spec(names: Sequence[str | None], rules: Mapping[str, MeshAxes] = RULES) -> P:
    """Map logical axis names to a PartitionSpec; a mesh axis used twice in one spec is an error."""
    used: dict[str, str] = {}
    out = []
    for name in names:
        if name is None:
            out.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no entry in the sharding rules")
        axes = rules[name]
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            if axis in used:
                raise ValueError(f"sharding rules collide: mesh axis {axis!r} is used by both logical axes "
                                 f"{used[axis]!r} and {name!r} in {tuple(names)}")
            used[axis] = name
        out.append(axes)
    return P(*out)


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh, what: str) -> P:
    """Check that every sharded dimension divides evenly; a clear error names the array and the dimension."""
    for dim, (size, axes) in enumerate(zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)))):
        if axes is None:
            continue
        n = axes_size(mesh, axes)
        if size % n:
            raise ValueError(f"{what}: dimension {dim} of shape {shape} (size {size}) cannot be split over mesh "
                             f"axes {axes} of size {n}; change the mesh or the sharding rules")
    return spec


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Mapping[str, MeshAxes] = RULES) -> Any:
    """NamedShardings for an NNX state whose Variables carry logical `out_sharding` metadata."""
    from flax import nnx

    def one(path, var):
        names = var.get_metadata().get("out_sharding") or (None,) * len(var.get_value().shape)
        what = "/".join(str(p) for p in path)
        spec = _fit_spec(logical_to_spec(names, rules), var.get_value().shape, mesh, what)
        return var.replace(NamedSharding(mesh, spec))

    return nnx.map_state(one, abstract_state)


def shard(x: jax.Array, names: Sequence[str | None], rules: Mapping[str, MeshAxes] = RULES) -> jax.Array:
    """Constrain an activation's sharding by logical names; a no-op outside a mesh context (single device)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, rules))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Batch arrays [B, T, ...]: rows split over the data-parallel axes, everything else whole."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1)))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble global arrays from this process's rows (multi-host: each process passes its own shard)."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
            for k, v in local.items()}
