"""Chunked prefill: a prompt fed 8 or 16 tokens at a time leaves the same KV cache and decodes the same tokens as the
one-pass prefill, and both equal transformers' greedy decoding (fp32, tiny random Qwen2, ragged left-padded rows)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from generate_helpers import hf_generate, prompts

from sailor2_jax.generate.engine import Generator
from sailor2_jax.generate.sampling import SamplingConfig

PROMPTS = prompts((5, 40, 17), seed=4)  # one 64-slot bucket: 8 chunks of 8, 4 of 16


def _prefill(gen: Generator):
    state, _ = gen.start(PROMPTS, [0, 1, 2], rows=3, samples=1, max_new=8, sampling=SamplingConfig(), seed=0,
                         eos_ids=())
    return jax.device_get(state)


@pytest.fixture(scope="module")
def whole(model1, mesh1):
    return Generator(model1, mesh1)


@pytest.mark.parametrize("chunk", [8, 16])
def test_chunked_prefill_equals_one_pass_and_transformers(ref, model1, mesh1, whole, chunk):
    chunked = Generator(model1, mesh1, prefill_chunk=chunk)
    a, b = _prefill(whole), _prefill(chunked)
    assert int(b.cache.index) == int(a.cache.index) == 64
    np.testing.assert_array_equal(b.cache.positions, a.cache.positions)
    np.testing.assert_array_equal(b.cache.segment_ids, a.cache.segment_ids)
    # real slots only: padding slots (segment 0, never attended by a real token) see other padding mid-prefill
    real = (a.cache.segment_ids > 0)[None, :, :, None, None]
    assert real.sum() == sum(map(len, PROMPTS))
    for got, want in ((b.cache.k, a.cache.k), (b.cache.v, a.cache.v)):
        np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), rtol=1e-5,
                                   atol=1e-5 * float(np.abs(want).max()))
    np.testing.assert_array_equal(b.tokens[:, 0], a.tokens[:, 0])  # the first sampled token, from the last slot
    got = [c[0].token_ids for c in chunked.generate(PROMPTS, max_new_tokens=8, eos_ids=())]
    assert got == hf_generate(ref, PROMPTS, 8, (), do_sample=False)


def test_prefill_chunk_must_be_a_power_of_two(model1, mesh1):
    with pytest.raises(ValueError, match="power of two"):
        Generator(model1, mesh1, prefill_chunk=24)
