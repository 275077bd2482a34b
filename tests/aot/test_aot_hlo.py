"""The HLO walker counts every loop as often as it runs (XLA's cost_analysis counts a loop body once), on programs
compiled here for CPU whose FLOPs are known exactly."""

import re

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


def _cache_writes(platform: str) -> tuple[dict[str, object], float, float]:
    """One-column-per-row writes into a layer-stacked [L, B, S, K, H] cache (the server's decode step: each row at
    its own column, a scatter), compiled for `platform`: {case: compiled}, the cache's and one write's bytes."""
    L, B, S, K, H = 4, 8, 256, 2, 128
    if platform == "tpu":
        from sailor2_jax.aot.topology import parse_slice

        sharding = jax.sharding.SingleDeviceSharding(parse_slice("v5p:2x2x1").devices()[0])
    else:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    shaped = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    # f32: XLA:CPU scatters bf16 through an f32 copy of the whole buffer (a real out-of-place convert)
    args = shaped((L, B, S, K, H), jnp.float32), shaped((B, K, H), jnp.float32), shaped((B,), jnp.int32)

    def write(cache_LBSKH, x_BKH, column_B, layer=1):
        return cache_LBSKH.at[layer, jnp.arange(B), column_B].set(x_BKH, mode="drop")

    def every_layer(cache_LBSKH, x_BKH, column_B):  # the write in a loop, the cache in the carry
        return jax.lax.fori_loop(0, L, lambda l, c: write(c, x_BKH, column_B, l), cache_LBSKH)

    def one_column(cache_LBSKH, x_BKH, column_B):  # every row at the same column: a dynamic-update-slice
        return jax.lax.dynamic_update_slice(cache_LBSKH, x_BKH[None, :, None], (1, 0, column_B[0], 0, 0))

    programs = {"donated": jax.jit(write, donate_argnums=0), "in a loop": jax.jit(every_layer, donate_argnums=0),
                "one column": jax.jit(one_column, donate_argnums=0),
                "not donated": jax.jit(write),  # the caller keeps its cache: XLA copies it first
                # the old cache returned beside the new one (read after the write, it would not need a copy:
                # XLA's scheduler reads it first)
                "old cache kept": jax.jit(lambda c, x, i: (write(c, x, i), c), donate_argnums=0)}
    return ({name: f.lower(*args).compile() for name, f in programs.items()}, 4 * L * B * S * K * H, 4 * B * K * H)


@pytest.mark.parametrize("platform", ["cpu", "tpu"])
def test_a_cache_write_costs_its_update_where_xla_performs_it_in_place(platform):
    """XLA performs a scatter / dynamic-update-slice in its operand's buffer; where the operand must survive,
    the compiled program copies it first, and that copy is what costs the whole cache."""
    if platform == "tpu":
        pytest.importorskip("libtpu", reason="TPU compilation needs the libtpu wheel (the test extra installs it)")
    compiled, cache, update = _cache_writes(platform)
    hbm = {name: HloModule(c.as_text()).cost().hbm_bytes for name, c in compiled.items()}
    copies = {name: bool(re.search(r"= f32\[4,8,256,2,128\]\S* copy\(", c.as_text())) for name, c in compiled.items()}
    assert copies == {"donated": False, "in a loop": False, "one column": False, "not donated": True,
                      "old cache kept": True}
    assert hbm["donated"] < 4 * update and hbm["one column"] < 4 * update  # update read + written, indices
    assert hbm["in a loop"] < 4 * 4 * update + 4096  # 4 layers, and the loop counter's own traffic
    # out of place: the copy of the whole cache, read and written
    assert hbm["not donated"] >= 2 * cache and hbm["old cache kept"] >= 2 * cache


def test_an_update_into_a_buffer_made_in_its_fusion_writes_the_whole_buffer():
    """A scatter into a fresh buffer (`full(-inf).at[rows, ids].set(...)`, top-k filtering) is not in place: the
    fusion writes every element of its output."""
    B, V, K = 16, 4096, 8
    f = lambda ids_BK, values_BK: jnp.full((B, V), -jnp.inf).at[jnp.arange(B)[:, None], ids_BK].set(values_BK)
    cost = HloModule(_compiled(f, jnp.zeros((B, K), jnp.int32), jnp.zeros((B, K))).as_text()).cost()
    assert cost.hbm_bytes >= 4 * B * V


@pytest.mark.parametrize("topology", ["v5e-8", "v5p-8"])
def test_a_tpu_program_reads_each_weight_once(topology):
    """The TPU compiler streams weights into VMEM with asynchronous copies and slices (`copy-start`, shaped
    (destination, source, context); `slice-start`, ((operand), slice, context)) and hands them to the matmul
    through bitcast fusions: each weight is read from HBM once, not once per element of those shapes."""
    pytest.importorskip("libtpu", reason="TPU compilation needs the libtpu wheel (the test extra installs it)")
    from sailor2_jax.aot.topology import parse_slice

    sharding = jax.sharding.SingleDeviceSharding(parse_slice(topology).devices()[0])
    D, F, T, L = 1024, 4096, 16, 4
    shaped = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=sharding)

    def mlp(x_TD, weights):
        for up_DF, down_FD in weights:
            x_TD = x_TD + jax.nn.silu(x_TD @ up_DF) @ down_FD
        return x_TD

    text = jax.jit(mlp).lower(shaped(T, D), [(shaped(D, F), shaped(F, D))] * L).compile().as_text()
    assert "copy-start(" in text
    weights = 2 * L * 2 * D * F
    assert weights <= HloModule(text).cost().hbm_bytes < 1.05 * weights


def test_a_fusion_that_updates_a_parameter_in_place_moves_only_the_update():
    """Fusion outputs: the update written into a parameter's buffer (its rows, nothing else) — alone or beside
    another output, as a scanned layer saves its activations into the stacked [L, ...] buffer — or, when the
    updated buffer is then converted, the whole buffer read and the whole output written."""
    def module(out: str, root: str) -> str:
        return f"""HloModule m

%fused (p0: f32[64,1024], p1: f32[1,1024], p2: s32[]) -> {out} {{
  %p0 = f32[64,1024]{{1,0}} parameter(0)
  %p1 = f32[1,1024]{{1,0}} parameter(1)
  %p2 = s32[] parameter(2)
  %z = s32[] constant(0)
  %dus = f32[64,1024]{{1,0}} dynamic-update-slice(%p0, %p1, %p2, %z)
  %twice = f32[1,1024]{{1,0}} add(%p1, %p1)
  ROOT %out = {root}
}}

ENTRY %main (a: f32[64,1024], b: f32[1,1024], i: s32[]) -> {out} {{
  %a = f32[64,1024]{{1,0}} parameter(0)
  %b = f32[1,1024]{{1,0}} parameter(1)
  %i = s32[] parameter(2)
  ROOT %f = {out} fusion(%a, %b, %i), kind=kLoop, calls=%fused
}}
"""
    row, buffer = 4 * 1024, 4 * 64 * 1024
    in_place = HloModule(module("f32[64,1024]{1,0}", "f32[64,1024]{1,0} bitcast(%dus)")).cost().hbm_bytes
    pair = "(f32[64,1024]{1,0}, f32[1,1024]{1,0})"
    beside = HloModule(module(pair, f"{pair} tuple(%dus, %twice)")).cost().hbm_bytes
    converted = HloModule(module("bf16[64,1024]{1,0}", "bf16[64,1024]{1,0} convert(%dus)")).cost().hbm_bytes
    assert in_place == 2 * row + 4  # the row read and written, the index
    assert beside == 3 * row + 4  # and the second output
    assert converted == buffer + row + 4 + buffer // 2  # the whole buffer read, the row, the index; bf16 written
