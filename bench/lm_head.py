"""LM-head log-prob benchmark: `hidden_logprobs` (model/logprobs.py: the vocabulary a block at a time, a running
log-sum-exp, a hand-written backward pass) against the textbook formulation — the whole fp32 logits, then
`jax.nn.log_softmax` and a gather, differentiated by JAX — on the same model, inputs and mesh, in one process.

  python bench/lm_head.py                        # the demo's tiny model (d 64, V 151,936), 8 fake CPU devices
  python bench/lm_head.py --blocks 128 1187 4748 --rows 16 --seq 1024 --chunk 256   # block widths to compare

Two workloads: scoring (forward only, what `eval` and SFT selection run) and training (the gradient of the summed
log-probs with respect to the weights and the hidden states). Prints one JSON line per (workload, variant) with
the median seconds of --repeats calls after a warm-up call, and the largest |difference| from the textbook values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="a packaged model config (its real vocabulary)")
    ap.add_argument("--devices", type=int, default=8, help="fake CPU devices (ignored on an accelerator)")
    ap.add_argument("--rows", type=int, default=16, help="scoring rows (training: --train-rows)")
    ap.add_argument("--seq", type=int, default=1024, help="scoring positions per row")
    ap.add_argument("--chunk", type=int, default=64, help="positions per LM-head chunk (scoring; the Scorer's)")
    ap.add_argument("--train-rows", type=int, default=8)
    ap.add_argument("--train-seq", type=int, default=128)
    ap.add_argument("--blocks", type=int, nargs="*", default=[], help="vocabulary block widths to try (default: "
                    "model/logprobs.py's); the width used is the widest divisor of the vocabulary up to each")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding

    from sailor2_jax.config import ComputeConfig, MeshConfig, load_model_config
    from sailor2_jax.model.init import create_model
    from sailor2_jax.model.logprobs import VOCAB_BLOCK, hidden_logprobs
    from sailor2_jax.sharding import logical_to_spec, make_mesh

    cfg = load_model_config(args.model, [])
    mesh = make_mesh(MeshConfig(data=-1, fsdp=1))
    graphdef, params = nnx.split(create_model(cfg, mesh, seed=0, compute=ComputeConfig(dtype="float32")))
    rng = np.random.default_rng(0)

    def inputs(rows: int, seq: int):
        x = rng.normal(size=(rows, seq, cfg.hidden_size)).astype(np.float32)
        t = rng.integers(0, cfg.vocab_size, (rows, seq)).astype(np.int32)
        return (jax.device_put(x, NamedSharding(mesh, logical_to_spec(("batch", None, None)))),
                jax.device_put(t, NamedSharding(mesh, logical_to_spec(("batch", None)))))

    def textbook(params, x_BTD, targets_BT):
        logp_BTV = jax.nn.log_softmax(nnx.merge(graphdef, params).logits(x_BTD), axis=-1)
        return jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]

    def blocked(block: int, chunk: int):
        return lambda params, x_BTD, targets_BT: hidden_logprobs(nnx.merge(graphdef, params), x_BTD, targets_BT,
                                                                 chunk, vocab_block=block)

    def timed(fn, *a) -> tuple[float, object]:
        out = jax.block_until_ready(fn(*a))
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    with jax.set_mesh(mesh):
        blocks = args.blocks or [VOCAB_BLOCK]
        x, t = inputs(args.rows, args.seq)
        base_s, want = timed(jax.jit(textbook), params, x, t)
        report = {"device": jax.devices()[0].device_kind, "devices": jax.device_count(), "vocab": cfg.vocab_size,
                  "d_model": cfg.hidden_size}
        print(json.dumps({**report, "workload": "scoring", "rows": args.rows, "seq": args.seq,
                          "variant": "textbook", "seconds": round(base_s, 3)}))
        for block in blocks:
            s, got = timed(jax.jit(blocked(block, args.chunk)), params, x, t)
            print(json.dumps({**report, "workload": "scoring", "variant": f"blocked {block}", "chunk": args.chunk,
                              "seconds": round(s, 3), "speedup": round(base_s / s, 2),
                              "max_abs_diff": float(jnp.max(jnp.abs(got - want)))}))

        x, t = inputs(args.train_rows, args.train_seq)

        def grad_of(fn):
            return jax.jit(jax.grad(lambda p, x, t: jnp.sum(fn(p, x, t)), argnums=(0, 1)))

        base_s, want = timed(grad_of(textbook), params, x, t)
        print(json.dumps({**report, "workload": "training", "rows": args.train_rows, "seq": args.train_seq,
                          "variant": "textbook", "seconds": round(base_s, 3)}))
        for block in blocks:
            s, got = timed(grad_of(blocked(block, args.train_seq)), params, x, t)
            diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
            print(json.dumps({**report, "workload": "training", "variant": f"blocked {block}",
                              "seconds": round(s, 3), "speedup": round(base_s / s, 2), "max_abs_grad_diff": diff}))


if __name__ == "__main__":
    main()
