"""grain pre-training pipeline on synthetic documents: packing, shares, determinism, state, stage switch, hosts."""

from __future__ import annotations

import collections
import json

import grain
import numpy as np
import pytest
from data_helpers import EOS, batching, config, documents, make_docs, stage_config, write_config

from sailor2_jax.languages import LANGUAGE_INDEX
from sailor2_jax.data.loader import PretrainIterator, host_stream, realised_shares


def decode_token(t: int) -> tuple[int, int, int]:
    """(task index, document, position) of a synthetic token."""
    return t // 10**6, (t % 10**6) // 1000, t % 1000


def rows(batches) -> list[dict[str, np.ndarray]]:
    return [{k: v[r] for k, v in b.items()} for b in batches for r in range(len(b["tokens"]))]


def take(it, n):
    return [next(it) for _ in range(n)]


def three_tasks(seq_len=64, batch_size=4, **kw):
    """Three tasks' config, documents and batching."""
    spec = {"a_vi": (1, [int(n) for n in np.random.default_rng(0).integers(3, 40, 300)]),
            "b_th": (2, [int(n) for n in np.random.default_rng(1).integers(50, 200, 300)]),
            "c_km": (3, [int(n) for n in np.random.default_rng(2).integers(10, 20, 300)])}
    cfg = config(stage_config({"a_vi": "vi", "b_th": "th", "c_km": "km"}, {"a_vi": 6, "b_th": 3, "c_km": 1}, **kw))
    return cfg, documents(spec), batching(seq_len, batch_size)


def test_packing_loses_and_duplicates_nothing():
    lengths = [int(n) for n in np.random.default_rng(5).integers(1, 90, 57)]
    docs = make_docs(1, lengths)
    cfg = config(stage_config({"a_vi": "vi"}, {"a_vi": 1}))
    it = PretrainIterator(cfg, batching(50, 3), documents=documents({"a_vi": (1, lengths)}))
    need = sum(len(d) - 1 for d in docs)  # one epoch of packed positions
    stream = {"tokens": [], "targets": []}
    while len(stream["tokens"]) < need:
        for row in rows([next(it)]):
            assert row["loss_mask"].all()  # endless streams: no padding in pre-training
            stream["tokens"].extend(row["tokens"].tolist())
            stream["targets"].extend(row["targets"].tolist())
    expected_in = collections.Counter(int(t) for d in docs for t in d[:-1])
    expected_tg = collections.Counter(int(t) for d in docs for t in d[1:])
    assert collections.Counter(stream["tokens"][:need]) == expected_in
    assert collections.Counter(stream["targets"][:need]) == expected_tg


def test_segments_never_cross_and_positions_restart():
    cfg, docs, b = three_tasks()
    it = PretrainIterator(cfg, b, documents=docs)
    lang_of = {1: LANGUAGE_INDEX["vi"], 2: LANGUAGE_INDEX["th"], 3: LANGUAGE_INDEX["km"]}
    for row in rows(take(it, 20)):
        seg, tok, tgt, pos = row["segment_ids"], row["tokens"], row["targets"], row["positions"]
        assert seg[0] == 1 and np.all(np.diff(seg) >= 0) and np.all(np.diff(seg) <= 1)
        for s in np.unique(seg):
            idx = np.flatnonzero(seg == s)
            assert np.array_equal(pos[idx], np.arange(len(idx)))  # positions restart at 0 in each segment
            src = [decode_token(t) for t in tok[idx]]
            assert len({(k, d) for k, d, _ in src}) == 1  # one document per segment
            k, d, _ = src[0]
            assert np.array_equal([j for *_, j in src], np.arange(src[0][2], src[0][2] + len(idx)))
            assert set(row["languages"][idx]) == {lang_of[k]}
            # each target is the next token of the same document, or the document's <|endoftext|>
            for t_in, t_out in zip(tok[idx], tgt[idx]):
                assert t_out == t_in + 1 or t_out == EOS
            if tgt[idx[-1]] == EOS:
                assert decode_token(tok[idx[-1]])[2] == len(docs[[*docs][k - 1]].data[d]) - 2


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_realised_token_shares_match_targets(temperature):
    cfg, docs, b = three_tasks(seq_len=256, batch_size=4)
    cfg = cfg.replace(mixture=cfg.mixture.replace(temperature=temperature))
    it = PretrainIterator(cfg, b, documents=docs)
    # independent expectation: p_i^(1/T), renormalised
    p = np.asarray([6, 3, 1], float) / 10
    q = p ** (1 / temperature) / (p ** (1 / temperature)).sum()
    expected = dict(zip(["vi", "th", "km"], q))
    realised, real, total = realised_shares(take(it, 150))
    assert real == total
    for lang, share in expected.items():
        assert abs(realised[lang] - share) < 0.02, (lang, realised, expected)


def test_same_seed_same_batches_other_seed_differs():
    cfg, docs, b = three_tasks()
    first = take(PretrainIterator(cfg, b, documents=docs), 5)
    again = take(PretrainIterator(cfg, b, documents=docs), 5)
    other = take(PretrainIterator(cfg, b.replace(seed=7), documents=docs), 5)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(first, again) for k in x)
    assert not all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(first, other))


def test_restored_state_reproduces_following_batches(tmp_path):
    cfg, docs, b = three_tasks()
    it = PretrainIterator(cfg, b, documents=docs)
    take(it, 7)
    state = json.loads(json.dumps(it.get_state()))  # what goes into the checkpoint is plain JSON
    expected = take(it, 6)
    fresh = PretrainIterator(cfg, b, documents=docs)
    fresh.set_state(state)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(expected, take(fresh, 6)) for k in x)
    # the same through grain's orbax checkpoint handler (what the training engine's manager calls)
    from etils import epath

    handler = grain.checkpoint.CheckpointHandler()
    it2 = PretrainIterator(cfg, b, documents=docs)
    take(it2, 7)
    handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it2))
    restored = handler.restore(epath.Path(tmp_path), args=grain.checkpoint.CheckpointRestore(
        PretrainIterator(cfg, b, documents=docs)))
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(expected, take(restored, 6)) for k in x)


def test_state_of_another_stage_is_refused():
    cfg, docs, b = three_tasks()
    other = cfg.replace(mixture=cfg.mixture.replace(name="other"))
    with pytest.raises(ValueError, match="switch_stage"):
        PretrainIterator(other, b, documents=docs).set_state(PretrainIterator(cfg, b, documents=docs).get_state())


def _doc_sequence(batches, task_index):
    """The order in which documents of one task appear (each document once, at its first token)."""
    seen = []
    for row in rows(batches):
        for t, m in zip(row["tokens"], row["loss_mask"]):
            k, d, _ = decode_token(int(t))
            if m and k == task_index and (not seen or seen[-1] != d):
                seen.append(d)
    return seen


def test_stage_switch_keeps_every_stream_where_it_was(tmp_path):
    stage1 = stage_config({"a_vi": "vi", "b_th": "th"}, {"a_vi": 1, "b_th": 1}, name="s1")
    path1 = write_config(tmp_path / "s1.yaml", stage1)
    stage2 = stage_config({"c_km": "km"}, {"c_km": 1}, name="s2", replay={"config": str(path1), "tokens": 1})
    spec = {"a_vi": (1, [20] * 400), "b_th": (2, [30] * 400), "c_km": (3, [25] * 400)}
    docs = documents(spec)
    it1 = PretrainIterator(config(stage1), batching(), documents=docs)
    first = take(it1, 9)
    it2 = PretrainIterator(config(stage2), batching(), documents=docs)  # switch_stage() = this + continue_from
    it2.continue_from(it1)
    positions = it2.stream_positions()[0]  # the one data shard of one host
    assert positions["c_km"] == 0
    # independent reference: stage 1 alone, run longer, gives each replayed task's document order
    reference = take(PretrainIterator(config(stage1), batching(), documents=docs), 40)
    after = take(it2, 12)
    for k, task in ((1, "a_vi"), (2, "b_th")):
        ref, done, cont = _doc_sequence(reference, k), _doc_sequence(first, k), _doc_sequence(after, k)
        assert done == ref[:len(done)]
        assert positions[task] == len(done)  # every document started in stage 1 counts as taken
        assert len(cont) > 2 and cont == ref[len(done):len(done) + len(cont)], task  # stage 2 goes on from there


@pytest.mark.parametrize("hosts", [2, 4])
def test_host_shards_are_disjoint_and_cover(hosts):
    n = 103
    base = grain.MapDataset.source(list(range(n)))
    per_host = [[host_stream(base, 11, h, hosts)[i] for i in range(len(range(h, n, hosts)))] for h in range(hosts)]
    flat = [x for part in per_host for x in part]
    assert len(flat) == n and set(flat) == set(range(n))


@pytest.mark.parametrize("hosts", [2, 4])
def test_host_batches_hold_disjoint_documents(hosts):
    n_docs, positions_per_doc, seq_len, batch_size = 200, 9, 40, 8
    # batches that stay within each host's share of the first epoch
    batches = (n_docs // hosts * positions_per_doc) // (seq_len * batch_size // hosts)
    seen = []
    for h in range(hosts):
        cfg = config(stage_config({"a_vi": "vi"}, {"a_vi": 1}, shard=(h, hosts)))
        it = PretrainIterator(cfg, batching(seq_len, batch_size),
                              documents=documents({"a_vi": (1, [positions_per_doc] * n_docs)}))
        assert it.local_batch_size == batch_size // hosts
        toks = np.concatenate([b["tokens"].ravel() for b in take(it, batches)])
        seen.append({decode_token(int(t))[1] for t in toks})
    assert all(not (seen[i] & seen[j]) for i in range(hosts) for j in range(i + 1, hosts))
    assert len(set().union(*seen)) >= 0.85 * n_docs


def test_global_batches_on_the_mesh():
    import jax

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.sharding import make_mesh

    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    cfg, docs, b = three_tasks(batch_size=8)
    batch = next(PretrainIterator(cfg, b, mesh=mesh, documents=docs))
    host = next(PretrainIterator(cfg, b, documents=docs))
    assert set(batch) == {"tokens", "targets", "loss_mask", "segment_ids", "positions", "languages"}
    for k, v in batch.items():
        assert isinstance(v, jax.Array) and v.shape == (8, 64)
        assert len(v.sharding.device_set) == 8
        np.testing.assert_array_equal(np.asarray(v), host[k])


def _hosts(cfg_dict, docs, hosts, state=None, data_shards=None, b=batching(32, 8)):
    its = []
    for h in range(hosts):
        d = json.loads(json.dumps(cfg_dict))
        d["loader"] |= {"shard_index": h, "shard_count": hosts, "data_shards": data_shards}
        it = PretrainIterator(config(d), b, documents=docs)
        if state is not None:
            it.set_state(json.loads(json.dumps(state)))  # as a checkpoint's JSON holds it
        its.append(it)
    return its


def _global(its):
    local = [next(it) for it in its]
    return {k: np.concatenate([b[k] for b in local]) for k in local[0]}


def test_data_shards_resume_on_another_host_count():
    """One run with 4 data shards: 1 host for 3 batches, then 2 hosts, then 4, then 1 again (each time from the
    merged states of the previous hosts, as a checkpoint restore does): the global batches are bitwise those of
    one uninterrupted host."""
    cfg_dict = stage_config({"a_vi": "vi", "b_th": "th"}, {"a_vi": 2, "b_th": 1})
    docs = documents({"a_vi": (1, [int(n) for n in np.random.default_rng(0).integers(3, 40, 200)]),
                      "b_th": (2, [int(n) for n in np.random.default_rng(1).integers(20, 90, 200)])})
    single = _hosts(cfg_dict, docs, 1, data_shards=4)[0]
    want = [next(single) for _ in range(12)]
    its = _hosts(cfg_dict, docs, 1, data_shards=4)
    got = [_global(its) for _ in range(3)]
    for hosts in (2, 4, 1):
        merged = PretrainIterator.merge_states([it.get_state() for it in its])
        its = _hosts(cfg_dict, docs, hosts, merged)  # data_shards left to the saved run's
        assert all(it.data_shards == 4 for it in its)
        got += [_global(its) for _ in range(3)]
    for i, (g, w) in enumerate(zip(got, want)):
        for k in w:
            assert np.array_equal(g[k], w[k]), (i, k)
    # the shards are independent streams: the rows of different shards hold different documents
    rows_of = lambda b, s: b["tokens"][2 * s:2 * s + 2]
    assert not np.array_equal(rows_of(want[0], 0), rows_of(want[0], 1))


def test_default_data_shards_is_the_first_host_count_and_errors_name_it():
    cfg_dict = stage_config({"a_vi": "vi"}, {"a_vi": 1})
    docs = documents({"a_vi": (1, [int(n) for n in np.random.default_rng(0).integers(3, 40, 100)])})
    two = _hosts(cfg_dict, docs, 2)
    assert [it.data_shards for it in two] == [2, 2] and two[0].get_state()["data_shards"] == 2
    merged = PretrainIterator.merge_states([it.get_state() for it in two])
    with pytest.raises(ValueError, match="2 data shards .* must be a multiple of the host count 4"):
        _hosts(cfg_dict, docs, 4, merged)
    with pytest.raises(ValueError, match="the iterator state has 2 data shards, loader.data_shards is 4"):
        _hosts(cfg_dict, docs, 1, merged, data_shards=4)
    with pytest.raises(ValueError, match="lacks data shards \\['1'\\]"):
        _hosts(cfg_dict, docs, 1, two[0].get_state())  # one process's state alone cannot restore both shards
    with pytest.raises(ValueError, match="3 data shards .* divide the batch size 8"):
        _hosts(cfg_dict, docs, 1, data_shards=3)


def test_stage_switch_keeps_the_data_shards_and_each_shards_streams(tmp_path):
    stage1 = stage_config({"a_vi": "vi", "b_th": "th"}, {"a_vi": 1, "b_th": 1}, name="s1")
    stage1["loader"]["data_shards"] = 2
    path1 = write_config(tmp_path / "s1.yaml", stage1)
    stage2 = stage_config({"c_km": "km"}, {"c_km": 1}, name="s2", replay={"config": str(path1), "tokens": 1})
    docs = documents({"a_vi": (1, [20] * 300), "b_th": (2, [30] * 300), "c_km": (3, [25] * 300)})
    it1 = PretrainIterator(config(stage1), batching(), documents=docs)
    take(it1, 7)
    it2 = PretrainIterator(config(stage2), batching(), documents=docs)  # data_shards not set: the previous stage's
    it2.continue_from(it1)
    assert it2.data_shards == 2
    old, new = it1.stream_positions(), it2.stream_positions()
    assert old[0] != old[1] or old[0]["a_vi"] > 0
    for s in (0, 1):
        assert {t: new[s][t] for t in ("a_vi", "b_th")} == old[s] and new[s]["c_km"] == 0


def test_data_shards_start_out_of_step_so_their_share_errors_cancel():
    """16 shards mixing 60/30/10: shards that all started with zero credits would draw the same tasks at the same
    time (the first batch then holds no 10 % task at all, and errors add up over shards); staggered starts
    (per-shard phases) put every task in the first batch and keep its shares near the targets."""
    spec = {t: (k, [int(n) for n in np.random.default_rng(k).integers(20, 60, 400)])
            for k, t in enumerate(("a_vi", "b_th", "c_km"), 1)}
    d = stage_config({"a_vi": "vi", "b_th": "th", "c_km": "km"}, {"a_vi": 6, "b_th": 3, "c_km": 1})
    d["loader"]["data_shards"] = 16
    it = PretrainIterator(config(d), batching(64, 16), documents=documents(spec))
    shares, _, _ = realised_shares([next(it)])
    assert set(shares) == {"vi", "th", "km"}, shares
    assert max(abs(shares[lang] - t) for lang, t in it.target_shares.items()) < 0.1, shares
