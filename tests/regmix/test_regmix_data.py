"""The proxies' data: held-out text, the compact vocabulary, validation batches, each proxy's mixture."""

from __future__ import annotations

import numpy as np
import pytest
from regmix_helpers import EOS, LANGS, config, documents, stage

from sailor2_jax.languages import LANGUAGE_INDEX
from sailor2_jax.data.loader import realised_shares
from sailor2_jax.regmix.config import ValidationConfig
from sailor2_jax.regmix.data import ProxyBatches, ProxyData, Vocabulary, split_task

LENGTHS = {"en": [40, 25, 60, 33], "vi": [90], "th": [30, 30, 30, 30, 30]}


def _tokens(task):
    return [np.asarray(task.data[i]) for i in range(len(task.data))]


def test_held_out_text_is_the_tail_of_each_task():
    docs = documents(LENGTHS)
    # one document: its head trains, its tail (20 % of 91 tokens) is held out
    single = split_task(docs["syn_vi"], ValidationConfig(fraction=0.2))
    whole = np.asarray(docs["syn_vi"].data[0])
    (head,), (tail,) = _tokens(single.train), single.held_out
    assert np.array_equal(np.concatenate([head, tail]), whole) and len(tail) == int(0.2 * 91)
    assert single.train_tokens == len(head) and single.train.mean_tokens == len(head)
    # several documents: whole ones from the end, then a part of the one straddling the cut
    multi = split_task(docs["syn_en"], ValidationConfig(fraction=0.5))
    original = _tokens(docs["syn_en"])
    total = sum(map(len, original))
    assert sum(map(len, multi.held_out)) == int(0.5 * total) == total - multi.train_tokens
    assert np.array_equal(np.concatenate(_tokens(multi.train) + multi.held_out), np.concatenate(original))
    assert np.array_equal(multi.held_out[-1], original[-1])  # the last document is held out whole
    capped = split_task(docs["syn_en"], ValidationConfig(fraction=0.5, max_tokens=10))
    assert sum(map(len, capped.held_out)) == 10
    with pytest.raises(ValueError, match="too few"):
        split_task(documents({"en": [3]})["syn_en"], ValidationConfig(fraction=0.1))


def test_compact_vocabulary_and_validation_batches():
    cfg = config("validation.fraction=0.25")
    docs = documents(LENGTHS)
    data = ProxyData(stage(), docs, cfg.proxy, cfg.validation)
    every = np.unique(np.concatenate([t for d in docs.values() for t in _tokens(d)]))
    assert np.array_equal(data.vocab.ids, every) and EOS in every
    assert data.vocab.size == 64 * -(-len(every) // 64)
    remapped = data.vocab.remap({"tokens": every[None], "targets": every[None, ::-1]})
    assert np.array_equal(remapped["tokens"][0], np.arange(len(every)))
    # the validation batches hold every held-out target once, each with its language
    mask = np.concatenate([b["loss_mask"] for b in data.validation]) > 0
    langs = np.concatenate([b["languages"] for b in data.validation])[mask]
    for lang in LANGS:
        assert (langs == LANGUAGE_INDEX[lang]).sum() == data.validation_tokens[lang] > 0
    assert all(b["tokens"].shape == (cfg.validation.batch_size, cfg.proxy.seq_len) for b in data.validation)
    assert int(np.concatenate([b["tokens"] for b in data.validation]).max()) < data.vocab.size
    # the prior's counts: every token of a language that is not held out
    for lang in LANGS:
        held = split_task(docs[f"syn_{lang}"], cfg.validation).held_out
        assert data.train_tokens[lang] == sum(LENGTHS[lang]) + len(LENGTHS[lang]) - sum(map(len, held))
    full = ProxyData(stage(), docs, cfg.proxy.replace(vocabulary="full"), cfg.validation)
    assert full.vocab.ids is None and full.vocab.size == 151936


def test_each_proxy_reads_its_own_mixture():
    cfg = config("proxy.batch_size=4")
    data = ProxyData(stage(), documents({"en": [50] * 6, "vi": [50] * 6, "th": [50] * 6}), cfg.proxy,
                     cfg.validation)
    weights = np.asarray([[0.6, 0.4, 0.0], [0.2, 0.2, 0.6]])
    batches = ProxyBatches(data, ["a", "b"], weights)
    seen = [next(batches) for _ in range(40)]
    for p, w in enumerate(weights):
        shares, _, _ = realised_shares([{k: v[p] for k, v in b.items()} for b in seen])
        for lang, share in zip(LANGS, w):
            assert abs(shares.get(lang, 0.0) - share) < 0.03, (p, lang, shares)
    state = batches.get_state()
    following = next(batches)
    again = ProxyBatches(data, ["a", "b"], weights)
    again.set_state(state)
    assert all(np.array_equal(following[k], v) for k, v in next(again).items())
    with pytest.raises(ValueError, match="checkpointed data positions"):
        ProxyBatches(data, ["a", "c"], weights).set_state(state)


def test_compact_vocabulary_of_documents():
    vocab = Vocabulary.compact(iter([np.asarray([5, 9, 9, 300])]), also=[EOS])
    assert vocab.ids.tolist() == [5, 9, 300, EOS] and vocab.size == 64
