"""The HLO walker counts every loop as often as it runs (XLA's cost_analysis counts a loop body once), on programs
compiled here for CPU whose FLOPs are known exactly."""

import jax
import jax.numpy as jnp
import pytest

from sailor2_jax.aot.hlo import HloModule, _group_size, nbytes


def _compiled(f, *args):
    return jax.jit(f).lower(*args).compile()


def test_scanned_and_nested_loops_are_multiplied_out():
    L, M, B, D = 6, 3, 32, 64
    w = jnp.ones((L, D, D), jnp.float32)
    x = jnp.ones((M, B, D), jnp.float32)

    def layers(h):  # L matmuls [B, D] x [D, D], scanned
        return jax.lax.scan(lambda h, w_l: (jnp.tanh(h @ w_l), None), h, w)[0]

    def step(x):  # an outer loop over M micro-batches around the layer loop
        return jax.lax.scan(lambda acc, xm: (acc + layers(xm).sum(), None), 0.0, x)[0]

    compiled = _compiled(step, x)
    cost = HloModule(compiled.as_text()).cost()
    exact = M * L * 2 * B * D * D
    assert cost.flops == exact
    raw = compiled.cost_analysis()
    raw = raw[0] if isinstance(raw, (list, tuple)) else raw
    assert raw["flops"] < exact / 5  # what this module corrects: one body of each loop


def test_without_loops_bytes_and_flops_equal_xlas_own_count():
    def loss(ws, x):
        for w in ws:
            x = jnp.tanh(x @ w)
        return (x ** 2).sum()

    compiled = _compiled(jax.grad(loss), [jnp.ones((256, 256))] * 4, jnp.ones((128, 256)))
    cost = HloModule(compiled.as_text()).cost()
    raw = compiled.cost_analysis()
    raw = raw[0] if isinstance(raw, (list, tuple)) else raw
    assert cost.bytes_accessed == pytest.approx(raw["bytes accessed"], rel=0.01)
    assert cost.flops == 2 * (4 + 4 + 3) * 128 * 256 * 256  # forward, weight and input gradients (not the first)


def test_dot_general_contracting_and_batch_dims():
    a, b = jnp.ones((4, 16, 32)), jnp.ones((4, 32, 8))
    cost = HloModule(_compiled(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), a, b).as_text()).cost()
    assert cost.flops == 2 * 4 * 16 * 32 * 8


def test_slices_of_stacked_buffers_count_only_the_slice():
    """A loop reading one layer of a stacked [L, D, D] array reads D·D per iteration, not L·D·D."""
    L, D = 32, 128
    w = jnp.ones((L, D, D), jnp.float32)
    h = jnp.ones((D, D), jnp.float32)
    cost = HloModule(_compiled(lambda h, w: jax.lax.scan(lambda h, w_l: (h @ w_l, None), h, w)[0], h, w).as_text()
                     ).cost()
    one_layer = 4 * D * D
    # each iteration moves a few layer-sized buffers (slice, matmul, carry copy); counting the whole stacked
    # operand every iteration would give more than L·L·one_layer
    assert L * one_layer < cost.hbm_bytes < L * L * one_layer / 2


def test_sizes_and_replica_groups():
    assert nbytes("(bf16[2,3]{1,0}, f32[4]{0})") == 2 * 6 + 4 * 4
    # a TPU tile pads the most minor dims: (8, 128) over dims 1 (most minor) and 0
    assert nbytes("bf16[5,100]{1,0:T(8,128)(2,1)}") == 2 * 8 * 128
    assert nbytes("f32[3,7,200]{1,2,0:T(8,128)}") == 4 * 3 * 128 * 200  # dim 1 is the most minor here
    assert nbytes("bf16[8,128]{1,0:T(8,128)(2,1)S(1)}", hbm_only=True) == 0  # on-chip (VMEM) buffer
    assert _group_size("replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}") == 4
    assert _group_size("replica_groups=[2,8]<=[16], dimensions={0}") == 8
    assert _group_size("replica_groups=mesh['axis_0'=4,'axis_1'=2,'axis_2'=1] {'axis_0','axis_1'}, x") == 8


def test_a_loop_without_a_readable_trip_count_is_an_error():
    text = """HloModule m

%cond (p: (s32[], f32[])) -> pred[] {
  %p = (s32[], f32[]) parameter(0)
  ROOT %c = pred[] constant(true)
}

%body (p: (s32[], f32[])) -> (s32[], f32[]) {
  ROOT %p = (s32[], f32[]) parameter(0)
}

ENTRY %main (x: (s32[], f32[])) -> (s32[], f32[]) {
  %x = (s32[], f32[]) parameter(0)
  ROOT %w = (s32[], f32[]) while(%x), condition=%cond, body=%body
}
"""
    with pytest.raises(ValueError, match="trip count"):
        HloModule(text).cost()


def test_trip_count_read_from_the_condition_when_not_annotated():
    """TPU modules carry no known_trip_count: the count comes from `counter < N` (here wrapped in a fusion, as
    the CPU compiler writes it), minus the counter's initial value."""
    w = jnp.ones((5, 16, 16))
    text = _compiled(lambda h, w: jax.lax.scan(lambda h, w_l: (h @ w_l, None), h, w)[0], jnp.ones((16, 16)), w
                     ).as_text()
    stripped = "\n".join(line.split(', backend_config=')[0] if " while(" in line else line
                         for line in text.splitlines())
    assert "known_trip_count" not in stripped
    assert HloModule(stripped).cost().flops == 5 * 2 * 16 * 16 * 16


def test_the_compilers_hbm_verdict_is_read_in_binary_units():
    from sailor2_jax.aot.topology import HbmVerdict

    v = HbmVerdict()
    v.parse("I1127 deepsea_compiler_backend.cc:2127] XLA::TPU program HBM usage: 91.71G / 95.74G\n"
            "I1127 deepsea_compiler_backend.cc:2171] Total hbm usage >= 94.76G:\n    reserved        263.00M \n")
    assert (v.program, v.total, v.limit) == (91.71 * 2 ** 30, 94.76 * 2 ** 30, 95.74 * 2 ** 30)
    refused = HbmVerdict()
    assert refused.parse_refusal("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
                                 "temporaries (327.41G) exceeds available HBM (95.74G).")
    assert (refused.program, refused.limit) == (327.41 * 2 ** 30, 95.74 * 2 ** 30)
