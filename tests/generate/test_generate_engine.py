"""The decode engine against `transformers` (fp32, tiny random Qwen2): greedy tokens, eos stops, the repetition
penalty, per-step logits against a full forward pass, sharded against one device, seeds and shared prefills."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from generate_helpers import FP32, hf_generate, ours, prompts

from sailor2_jax.generate.engine import Generator
from sailor2_jax.generate.sampling import SamplingConfig
from sailor2_jax.model.init import with_compute
from sailor2_jax.model.qwen2 import KVCache


@pytest.fixture(scope="module")
def gen1(model1, mesh1):
    return Generator(model1, mesh1)


def _tokens(results):
    return [[c.token_ids for c in completions] for completions in results]


def test_greedy_equals_transformers_on_ragged_batches_with_eos_stops(ref, gen1, model1, mesh1):
    ps = prompts((5, 11, 3, 8, 14))
    free = gen1.generate(ps, max_new_tokens=16, eos_ids=())  # only to pick stop ids that some rows do produce
    eos = (free[0][0].token_ids[6], free[1][0].token_ids[2])
    expected = hf_generate(ref, ps, 16, eos, do_sample=False)
    for batch_size in (8, 2):  # one bucket with empty rows; several batches, longest prompts first
        got = gen1.generate(ps, max_new_tokens=16, eos_ids=eos, batch_size=batch_size)
        assert [r[0].token_ids for r in got] == expected
        reasons = [r[0].finish_reason for r in got]
        assert reasons == ["stop" if row[-1] in eos else "length" for row in expected]
    assert "stop" in reasons and "length" in reasons
    # the decode loop scanning the stacked weights (unstack=False) decodes the same
    scanned = Generator(model1, mesh1, unstack=False).generate(ps, max_new_tokens=16, eos_ids=eos)
    assert [r[0].token_ids for r in scanned] == expected


def test_repetition_penalty_equals_transformers(ref, gen1):
    # one row at a time in transformers: it also penalises the padding of a left-padded batch, we do not
    ps = prompts((4, 9, 6), seed=1)
    sampling = SamplingConfig(repetition_penalty=1.8)
    got = gen1.generate(ps, sampling=sampling, max_new_tokens=12, eos_ids=(1,))
    expected = [hf_generate(ref, [p], 12, (1,), do_sample=False, repetition_penalty=1.8)[0] for p in ps]
    assert [r[0].token_ids for r in got] == expected
    plain = gen1.generate(ps, max_new_tokens=12, eos_ids=(1,))
    assert _tokens(plain) != _tokens(got)  # the penalty changed something


@pytest.mark.parametrize("scan_layers", [True, False])
def test_each_decode_step_equals_a_full_forward_pass(ref, model1, mesh1, scan_layers):
    """Left-padded prompts of different lengths are prefilled, then six known tokens are fed one per step; every
    step's logits equal transformers' forward pass over that row's whole (unpadded) prefix."""
    model = with_compute(model1, FP32.replace(scan_layers=scan_layers))
    ps = prompts((3, 9, 6), seed=2)
    follow = np.random.RandomState(3).randint(2, 160, (3, 6))
    P, S = 16, 24
    tokens = np.zeros((3, P), np.int32)
    for i, p in enumerate(ps):
        tokens[i, P - len(p):] = p
    lengths = np.array([len(p) for p in ps])
    real = np.arange(P)[None] >= (P - lengths)[:, None]
    positions = np.where(real, np.arange(P)[None] - (P - lengths)[:, None], 0)

    from flax import nnx
    graphdef, state = nnx.split(model)

    @jax.jit
    def prefill(state, tokens, positions, segments):
        m = nnx.merge(graphdef, state)
        x, cache = m.extend(tokens, KVCache.empty(m.cfg, 3, S, jnp.float32), positions_BT=positions,
                            segment_ids_BT=segments)
        return m.logits(x[:, -1:])[:, 0], cache

    @jax.jit
    def step(state, cache, token, position):
        m = nnx.merge(graphdef, state)
        x, cache = m.extend(token[:, None], cache, positions_BT=position[:, None], segment_ids_BT=jnp.ones((3, 1),
                                                                                                          jnp.int32))
        return m.logits(x)[:, 0], cache

    logits, cache = prefill(state, tokens, positions, real.astype(np.int32))
    got = [np.asarray(logits)]
    for t in range(follow.shape[1]):
        logits, cache = step(state, cache, follow[:, t], lengths + t)
        got.append(np.asarray(logits))
    assert int(cache.index) == P + follow.shape[1]
    for i, p in enumerate(ps):
        full = torch.tensor([p + follow[i].tolist()])
        with torch.no_grad():
            expected = ref(full).logits[0, len(p) - 1:].numpy()  # positions predicting after each prefix
        mine = np.stack([g[i] for g in got])
        np.testing.assert_allclose(mine, expected, atol=2e-4 * np.abs(expected).max())


def test_sharded_decode_equals_one_device(ref, gen1, mesh8, tmp_path):
    gen8 = Generator(ours(ref, tmp_path / "hf", mesh8), mesh8)
    assert gen8.data_parallel == 4
    cache_spec = gen8._state_shardings(False).cache.k.spec
    assert tuple(cache_spec) == (None, ("data", "fsdp"), None, "tensor", None)
    ps = prompts((7, 2, 12), seed=4)
    assert _tokens(gen8.generate(ps, max_new_tokens=10, eos_ids=(1,))) == \
        _tokens(gen1.generate(ps, max_new_tokens=10, eos_ids=(1,)))
    # the prefilled caches agree too, and the 8-device one is laid out as the rules say
    kwargs = dict(rows=4, samples=1, max_new=4, sampling=SamplingConfig(), seed=0, eos_ids=(1,))
    state8, _ = gen8.start(ps, [0, 1, 2], **kwargs)
    state1, _ = gen1.start(ps, [0, 1, 2], **kwargs)
    assert state8.cache.k.sharding.spec == cache_spec
    np.testing.assert_allclose(np.asarray(state8.cache.k), np.asarray(state1.cache.k), atol=1e-5)


def test_same_seed_same_samples_and_samples_of_a_prompt_share_its_prefill(gen1):
    ps = prompts((6, 10), seed=5)
    sampling = SamplingConfig(temperature=1.0, top_k=40)
    first = _tokens(gen1.generate(ps, sampling=sampling, num_samples=4, seed=7, max_new_tokens=10, eos_ids=()))
    again = _tokens(gen1.generate(ps, sampling=sampling, num_samples=4, seed=7, max_new_tokens=10, eos_ids=()))
    other = _tokens(gen1.generate(ps, sampling=sampling, num_samples=4, seed=8, max_new_tokens=10, eos_ids=()))
    assert first == again and first != other
    for samples in first:
        assert len(samples) == 4 and len({tuple(s) for s in samples}) > 1  # the samples of one prompt differ
    # one prefill of 2 prompt rows serves 2 × 4 sample rows: each prompt's four cache rows are the same prefill
    state, _ = gen1.start(ps, [0, 1], rows=2, samples=4, max_new=10, sampling=sampling, seed=7, eos_ids=())
    k = np.asarray(state.cache.k)
    assert k.shape[1] == 8
    for prompt in range(2):
        rows = k[:, 4 * prompt:4 * prompt + 4]
        assert (rows == rows[:, :1]).all()
    assert not np.array_equal(k[:, 0], k[:, 4])


def test_default_eos_ids_are_qwens_and_the_engine_needs_no_tokenizer_stack():
    import subprocess
    import sys

    from sailor2_jax.tokenizer import EOS_ID, IM_END_ID
    from sailor2_jax.tokenizer import DEFAULT_EOS_IDS
    assert DEFAULT_EOS_IDS == (EOS_ID, IM_END_ID)
    # an accelerator image without TensorFlow/seqio can import the engine (and run bench/decode.py)
    code = "import sys, sailor2_jax.generate.engine; sys.exit('tensorflow' in sys.modules or 'seqio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_compiled_programs_are_kept_on_the_generator_and_freed_with_it(model1, mesh1):
    """The same batch shape and settings reuse the compiled programs; a dropped generator (and the weights it holds)
    is freed — a cache on the class would keep it alive."""
    import gc
    import weakref

    gen = Generator(model1, mesh1)
    args = (8, 16, 1, 4, SamplingConfig(), (1,))
    assert gen.programs(*args) is gen.programs(*args)
    assert gen.programs(*args) is not Generator(model1, mesh1).programs(*args)
    assert len(gen.generate(prompts((3, 5)), max_new_tokens=4, eos_ids=(1,))) == 2
    alive = weakref.ref(gen)
    del gen
    gc.collect()
    assert alive() is None


def test_a_second_model_of_the_same_shapes_compiles_nothing_and_decodes_its_own_weights(tmp_path, mesh1):
    """Two generators on two models of one architecture share their executables (compiled.shared_jit): the second
    compiles nothing, and its tokens are still its own model's (transformers on its weights), not the first's."""
    from generate_helpers import hf_model

    from sailor2_jax.compiled import stats

    refs = [hf_model(seed=seed) for seed in (11, 12)]
    gens = [Generator(ours(r, tmp_path / str(i), mesh1), mesh1) for i, r in enumerate(refs)]
    ps = prompts((6, 9, 4))
    got = [gens[0].generate(ps, max_new_tokens=12, eos_ids=())]
    before = stats()
    got.append(gens[1].generate(ps, max_new_tokens=12, eos_ids=()))
    after = stats()
    assert after["compiled"] == before["compiled"] and after["shared"] == before["shared"] + 2  # prefill, decode
    for ref, results in zip(refs, got):
        assert _tokens(results) == [[row] for row in hf_generate(ref, ps, 12, (), do_sample=False)]
    assert _tokens(got[0]) != _tokens(got[1])
