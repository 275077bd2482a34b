"""SFT packing without splitting (first-fit, best-fit): examples stay whole, nothing lost, assistant-only loss."""

from __future__ import annotations

import collections

import grain
import numpy as np
import pytest

from sailor2_jax.data.packing import pack_without_splitting, sft_example, to_contract

T = 48


def examples(n=60, seed=0):
    """SFT sequences whose tokens encode (example, position); the second half is the 'assistant' part."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        length = int(rng.integers(3, T + 2))  # up to T + 1 tokens → up to T positions
        tokens = np.asarray([e * 1000 + j for j in range(length)], np.int32)
        mask = np.zeros(length, bool)
        mask[length // 2:] = True
        out.append((tokens, mask))
    return out


@pytest.mark.parametrize("method", ["first_fit", "best_fit"])
def test_pack_without_splitting(method):
    data = examples()
    ds = grain.MapDataset.source([sft_example(t, m, 3) for t, m in data]).to_iter_dataset()
    packed = pack_without_splitting(ds, T, method, num_packing_bins=4).batch(2, drop_remainder=False)
    rows = []
    for batch in packed:
        b = to_contract(batch, pad_id=151643)
        rows += [{k: v[r] for k, v in b.items()} for r in range(len(b["tokens"]))]
    seen = collections.Counter()
    for row in rows:
        seg = row["segment_ids"]
        for s in set(seg[seg > 0].tolist()):
            idx = np.flatnonzero(seg == s)
            ex = {int(t) // 1000 for t in row["tokens"][idx]}
            assert len(ex) == 1  # one example per segment
            e = ex.pop()
            tokens, mask = data[e]
            # the whole example, in order: never split across rows
            assert np.array_equal(row["tokens"][idx], tokens[:-1])
            assert np.array_equal(row["targets"][idx], tokens[1:])
            assert np.array_equal(row["positions"][idx], np.arange(len(idx)))
            assert np.array_equal(row["loss_mask"][idx], mask[1:].astype(np.float32))
            assert set(row["languages"][idx]) == {3}
            seen[e] += 1
        pad = seg == 0
        assert not row["loss_mask"][pad].any() and set(row["languages"][pad]) <= {-1}
    assert seen == collections.Counter(range(len(data)))  # each example exactly once


def test_too_long_example_is_an_error():
    tokens = np.arange(T + 2, dtype=np.int32)
    ds = grain.MapDataset.source([sft_example(tokens, np.ones(T + 2, bool), 0)]).to_iter_dataset()
    with pytest.raises(ValueError, match="more than seq_len"):
        list(pack_without_splitting(ds, T))
