"""Compiled programs shared within a process by what they compute.

`jax.jit` keeps what it compiles per function object, so two functions that lower to the same program compile it
twice: the steps of two runs whose settings differ only where the program does not (SFT's step is pretraining's
with another mask; the step after a resume in the same process), the init of one architecture under another
attention kernel, the decode loop of a second `Generator` on a model of the same shapes (the demo evaluates the
expanded and the final model, then generates, drafts and judges with the final one). On CPU a training step takes
seconds to compile; a profile of the test suite found a quarter of its compile time spent on programs the same
process had already compiled.

`shared_jit` is `jax.jit` whose executables live in one table for the process, keyed by the lowered program's text
and the mesh's devices (the last `KEPT` used): a function is still traced and lowered once per argument signature
(cheap), but compiled only if no function before it lowered to the same program. It is not JAX's persistent
compilation cache, which serialises executables to disk and, on CPU with JAX 0.10.2, loads multi-device programs
that deadlock in their first collective (docs/performance.md, "Compilation cache"): nothing here is serialised.

Sharing is safe because the text is the whole program: constants captured by a closure are embedded in it (unless
`jax_use_simplified_jaxpr_constants` hoists them into hidden arguments: then nothing is shared), shardings and
donation are attributes of its arguments, and a host callback is named in it by its own address.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

KEPT = 64  # executables kept for the process: enough for every program one run or demo stage compiles


class Recent(collections.OrderedDict):
    """The last `size` entries used: what the process keeps of what it compiles (executables here, the generation
    engine's programs per instance, training step setups)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        value = self.pop(key) if key in self else make()
        self[key] = value  # the most recently used last
        while len(self) > self.size:
            self.popitem(last=False)
        return value


_EXECUTABLES = Recent(KEPT)
_STATS = {"compiled": 0, "shared": 0}


def stats() -> dict[str, int]:
    """Programs compiled and programs found already compiled by `shared_jit` in this process."""
    return dict(_STATS)


def _signature(x: Any) -> Any:
    """What about one argument leaf can change the program lowered for it."""
    if isinstance(x, jax.Array | jax.ShapeDtypeStruct):  # (typed PRNG keys have no weak_type)
        return x.shape, x.dtype, getattr(x, "weak_type", False), x.sharding
    if isinstance(x, np.ndarray | np.generic):
        return x.shape, x.dtype
    return type(x)


class SharedJit:
    """A jitted function (see the module); `lower` is `jax.jit`'s, for ahead-of-time compilation."""

    def __init__(self, fun: Callable, mesh: Mesh, **jit_kwargs):
        self.jitted = jax.jit(fun, **jit_kwargs)
        # what the text does not say: which devices, and options given to XLA rather than written in the program
        self._context = (tuple(mesh.device_ids.flat), mesh.devices.shape,
                         tuple(sorted((jit_kwargs.get("compiler_options") or {}).items())))
        self._by_signature: dict[tuple, jax.stages.Compiled] = {}

    def lower(self, *args) -> jax.stages.Lowered:
        return self.jitted.lower(*args)

    def __call__(self, *args):
        leaves, tree = jax.tree.flatten(args)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):  # called inside another program: inline it
            return self.jitted(*args)
        signature = (tree, tuple(map(_signature, leaves)))
        compiled = self._by_signature.get(signature)
        if compiled is None:
            compiled = self._by_signature[signature] = self._compile(self.jitted.lower(*args))
        return compiled(*args)

    def _compile(self, lowered: jax.stages.Lowered) -> jax.stages.Compiled:
        # constants may live outside the text (and will, once JAX drops the flag): share nothing. The tests expect
        # sharing, so a JAX that turns it off here shows there
        if getattr(jax.config, "jax_use_simplified_jaxpr_constants", True):
            _STATS["compiled"] += 1
            return lowered.compile()
        # the trees too: a call checks its arguments' structure against the one the executable was compiled for
        key = (hashlib.sha256(lowered.as_text().encode()).digest(), self._context, lowered.in_tree, lowered.out_tree)
        _STATS["shared" if key in _EXECUTABLES else "compiled"] += 1
        return _EXECUTABLES.get_or_make(key, lowered.compile)


def shared_jit(fun: Callable, mesh: Mesh, **jit_kwargs) -> SharedJit:
    """`jax.jit(fun, **jit_kwargs)` for a program on `mesh` whose executable is shared with every function of this
    process that lowers to the same program (see the module)."""
    return SharedJit(fun, mesh, **jit_kwargs)
