"""The slot engine on its own: continuous batching equals transformers per request, a cancelled request frees its
slot for the queue, the engine sharded over 2×2×2 fake devices equals one device, and neither the decode steps per
dispatch nor the decode batch bucket changes a sample (greedy or seeded)."""

from __future__ import annotations

import threading

import pytest
from generate_helpers import hf_generate, hf_model, one_device_mesh, ours, prompts

from sailor2_jax.config import MeshConfig
from sailor2_jax.generate.sampling import SamplingConfig
from sailor2_jax.serve.engine import Engine, Request
from sailor2_jax.sharding import make_mesh


@pytest.fixture(scope="module")
def ref():
    return hf_model()


def _serve(engine: Engine, cases, sampling=SamplingConfig(), top=0, eos_ids=()):
    """Submit every case at once; (tokens, logprobs, finish reasons) per case."""
    out, done = [], []
    for prompt, max_tokens in cases:
        tokens, logprobs, reasons, event = [], [], [], threading.Event()
        out.append((tokens, logprobs, reasons))
        done.append(event)

        def on_token(s, t, tokens=tokens, logprobs=logprobs):
            tokens.append(t.id)
            logprobs.append(t.logprob)

        def on_finish(s, reason, reasons=reasons, event=event):
            reasons.append(reason)
            event.set()
        engine.submit(Request(prompt=prompt, max_tokens=max_tokens, on_token=on_token, on_finish=on_finish,
                              sampling=sampling, seed=3, top_logprobs=top, eos_ids=eos_ids))
    for event in done:
        assert event.wait(60)
    return out


def _engine(model, mesh, slots=4, decode_steps=8):
    engine = Engine(model, mesh, max_slots=slots, max_len=32, buckets=[32], decode_steps=decode_steps)
    engine.warm()
    engine.start()
    return engine


def test_continuous_batching_equals_transformers_and_sharded_equals_one_device(ref, tmp_path):
    cases = list(zip(prompts((5, 11, 3, 8, 14, 20, 2)), (10, 4, 16, 7, 12, 9, 3)))  # 7 requests, 4 slots
    one = _engine(ours(ref, tmp_path / "one", one_device_mesh()), one_device_mesh())
    try:
        greedy = _serve(one, cases, top=2)
        sampled = _serve(one, cases, SamplingConfig(temperature=1.0, top_k=20))
    finally:
        one.shutdown(1)
    for (prompt, max_tokens), (tokens, _, reasons) in zip(cases, greedy):
        assert tokens == hf_generate(ref, [prompt], max_tokens, (), do_sample=False)[0]
        assert reasons == ["length"]
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = _engine(ours(ref, tmp_path / "eight", mesh), mesh)
    try:
        assert sharded.rows == 4  # a prefill runs one prompt per data-parallel device
        for got, want in zip(_serve(sharded, cases, top=2), greedy):
            assert got[0] == want[0]
            assert got[1] == pytest.approx(want[1], abs=1e-4)  # two compiled programs: a tolerance
        assert [g[0] for g in _serve(sharded, cases, SamplingConfig(temperature=1.0, top_k=20))] == \
            [s[0] for s in sampled]
    finally:
        sharded.shutdown(1)


def test_cancel_frees_the_slot_for_the_queue(ref, tmp_path):
    mesh = one_device_mesh()
    engine = Engine(ours(ref, tmp_path, mesh), mesh, max_slots=1, max_len=32, buckets=[32])
    engine.warm()
    finished = threading.Event()
    reasons = []

    def on_token(s, t):  # the client goes away after its third token (on the engine thread: deterministic)
        if long.counts[0] == 3:
            long.cancel()
    long = Request(prompt=[5, 6, 7], max_tokens=28, on_token=on_token, on_finish=lambda s, r: reasons.append(r))
    short = Request(prompt=[8, 9], max_tokens=2, on_token=lambda s, t: None,
                    on_finish=lambda s, r: (reasons.append(r), finished.set()))
    engine.submit(long)
    engine.submit(short)  # waits: the only slot is taken
    engine.start()
    try:
        assert finished.wait(30)
        assert reasons == ["abort", "length"] and long.counts[0] <= 5  # a step or two in flight, then freed
    finally:
        engine.shutdown(1)


def test_decode_steps_and_batch_buckets_do_not_change_a_sample(ref, tmp_path):
    """k = 1 and k = 3 tokens per dispatch, 4 slots (decode buckets 1, 2, 4): the same greedy tokens as transformers,
    stopping on the device at an eos id inside a dispatch, and the same seeded samples; one request alone runs the
    1-row bucket."""
    mesh = one_device_mesh()
    model = ours(ref, tmp_path, mesh)
    cases = list(zip(prompts((5, 11, 3, 8, 14, 20, 2)), (10, 4, 16, 7, 12, 9, 3)))
    want = hf_generate(ref, [cases[2][0]], 16, (), do_sample=False)[0]
    eos = (want[5],)  # request 2 stops on it at its sixth token, inside a dispatch of 3
    results = {}
    for k in (1, 3):
        engine = _engine(model, mesh, decode_steps=k)
        try:
            assert engine.programs.batch_buckets == [1, 2, 4]
            _serve(engine, cases[:1])
            assert engine.dispatched == {1: engine.steps}  # alone: 1-row steps only
            results[k] = (_serve(engine, cases, eos_ids=eos),
                          _serve(engine, cases, SamplingConfig(temperature=1.0, top_k=20), eos_ids=eos))
        finally:
            engine.shutdown(1)
    greedy, sampled = results[1]
    for (prompt, max_tokens), (tokens, _, reasons) in zip(cases, greedy):
        assert tokens == hf_generate(ref, [prompt], max_tokens, eos, do_sample=False)[0]
        assert reasons == ["stop" if tokens[-1] in eos else "length"]
    assert greedy[2][0] == want[:6] and greedy[2][2] == ["stop"]
    assert [g[0] for g in results[3][0]] == [g[0] for g in greedy]
    assert [s[0] for s in results[3][1]] == [s[0] for s in sampled]
    for got, first in zip(results[3][1], sampled):
        assert got[1] == pytest.approx(first[1], abs=1e-5)
