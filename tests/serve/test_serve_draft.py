"""The server with a draft (`serve --draft-model`): the slot engine's speculative decode gives the tokens of the
engine without a draft (greedy: token for token, as transformers), with a self draft on an expanded model and with a
separate draft model, whatever the rounds per dispatch; seeded samples do not depend on the dispatch; refusals."""

from __future__ import annotations

import pytest
from generate_helpers import expanded_target, hf_generate, hf_model, one_device_mesh, ours, prompts
from test_serve_engine import _serve

from sailor2_jax.generate.sampling import SamplingConfig
from sailor2_jax.model.hf import import_hf
from sailor2_jax.serve.engine import Engine

CASES = list(zip(prompts((5, 11, 3, 8, 14, 20, 2)), (10, 4, 16, 7, 12, 9, 3)))  # 7 requests, 2 slots


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """(HF target, ours): a 2-layer base expanded to 4 layers, the inserted ones perturbed."""
    from generate_helpers import FP32

    hf_target, path = expanded_target(hf_model(), tmp_path_factory.mktemp("draft-target"), noise=0.03)
    return hf_target, import_hf(path, one_device_mesh(), FP32)


def _engine(model, draft=None, decode_steps=5, draft_tokens=2):
    engine = Engine(model, one_device_mesh(), max_slots=2, max_len=32, buckets=[32], decode_steps=decode_steps,
                    draft=draft, draft_tokens=draft_tokens)
    engine.warm()
    engine.start()
    return engine


def test_a_draft_changes_no_token(target, tmp_path):
    hf_target, model = target
    eos = (hf_generate(hf_target, [CASES[2][0]], 16, (), do_sample=False)[0][5],)  # request 2 stops inside a block
    other = ours(hf_model(layers=1, seed=1), tmp_path, one_device_mesh())
    results = {}
    for name, draft, steps in (("plain", None, 5), ("self", "self", 3), ("self, 2 rounds", "self", 6),
                               ("other", other, 3)):
        engine = _engine(model, draft, steps)
        try:
            results[name] = (_serve(engine, CASES, top=2, eos_ids=eos),
                             _serve(engine, CASES, SamplingConfig(temperature=1.0, top_k=20), eos_ids=eos))
            results[name + " counts"] = (engine.drafted, engine.accepted)
        finally:
            engine.shutdown(1)
    for (prompt, max_tokens), (tokens, _, reasons) in zip(CASES, results["plain"][0]):
        assert tokens == hf_generate(hf_target, [prompt], max_tokens, eos, do_sample=False)[0]
    for name in ("self", "self, 2 rounds", "other"):
        for got, want in zip(results[name][0], results["plain"][0]):
            assert got[0] == want[0] and got[2] == want[2]  # tokens and finish reasons
            assert got[1] == pytest.approx(want[1], abs=1e-4)  # log-probs: the target's own
    drafted, accepted = results["self counts"]
    assert 0 < accepted < drafted  # the self draft agrees often, not always
    assert results["other counts"][1] < accepted
    # a sample depends on its seed and tokens, not on the rounds per dispatch
    assert [s[0] for s in results["self"][1]] == [s[0] for s in results["self, 2 rounds"][1]]


def test_refusals(target, tmp_path):
    _, model = target
    base = ours(hf_model(), tmp_path / "base", one_device_mesh())
    with pytest.raises(ValueError, match="block-expanded"):
        Engine(base, one_device_mesh(), max_slots=2, max_len=32, buckets=[32], draft="self")
    small = ours(hf_model(vocab=100), tmp_path / "small", one_device_mesh())
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        Engine(model, one_device_mesh(), max_slots=2, max_len=32, buckets=[32], draft=small, tokenizer_size=160)
    engine = Engine(model, one_device_mesh(), max_slots=2, max_len=32, buckets=[32], draft="self")
    with pytest.raises(ValueError, match="repetition_penalty"):
        engine.check(4, 4, 1, SamplingConfig(repetition_penalty=1.1))


def test_served_greedy_chat_with_a_draft_equals_transformers_and_reports_acceptance(tiny, tmp_path):
    """Through HTTP and the `openai` client: an expanded real-vocabulary model served with its `self` draft and with
    a separate random draft model answers concurrent greedy chats with transformers' tokens (the server without a
    draft does too: test_serve_api.py), and /metrics counts the drafted and accepted tokens."""
    import concurrent.futures
    import re

    import openai
    import requests
    import torch
    from generate_helpers import real_vocab_hf_dir
    from serve_helpers import SYSTEM
    from transformers import AutoTokenizer

    from sailor2_jax.generate.speculative import open_draft
    from sailor2_jax.model.source import ModelSource, open_model
    from sailor2_jax.serve.server import Server
    from sailor2_jax.tokenizer import EOS_ID, IM_END_ID, save_hf_tokenizer

    hf_target, path = expanded_target(tiny[0], tmp_path, noise=0.01)
    save_hf_tokenizer(path)
    hf_tok = AutoTokenizer.from_pretrained(path)
    texts = ["สวัสดีครับ", "Hello there, how are you today?", "សួស្តី"]
    chats = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": t}] for t in texts]
    want = []
    for messages in chats:
        ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        with torch.no_grad():
            out = hf_target.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=10, do_sample=False, eos_token_id=[EOS_ID, IM_END_ID],
                                     pad_token_id=EOS_ID)
        want.append(out[0, len(ids):].tolist())
    source = ModelSource(path=path, dtype="float32")
    opened = open_model(source, mesh=one_device_mesh())
    acceptance = {}
    for name in ("self", str(real_vocab_hf_dir(tmp_path / "other", seed=3))):
        draft = open_draft(opened, name, source)[0] or "self"
        server = Server(opened, model_name="tiny", port=0, max_slots=2, max_len=64, buckets=[64], system=SYSTEM,
                        draft=draft, draft_tokens=3, decode_steps=4, log_level="warning", drain_seconds=5).start()
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)

            def chat(messages):
                return client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                                      extra_body={"return_token_ids": True})
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                got = list(pool.map(chat, chats))
            assert [g.choices[0].model_extra["token_ids"] for g in got] == want, name
            metrics = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
        finally:
            server.stop()
        value = {m: float(v) for m, v in re.findall(r"^(sailor2_draft_\w+) (\S+)$", metrics, re.M)}
        assert value["sailor2_draft_tokens"] > 0
        assert value["sailor2_draft_acceptance"] == pytest.approx(
            value["sailor2_draft_accepted_tokens"] / value["sailor2_draft_tokens"])
        acceptance[name] = value["sailor2_draft_acceptance"]
    own = acceptance.pop("self")
    assert own > 0.5 and own > max(acceptance.values()), (own, acceptance)  # the self draft: close to the model


def test_serve_command_refuses_self_without_an_expansion_record(tiny, capsys):
    from sailor2_jax.cli import main

    assert main(["serve", "--model", str(tiny[1]), "--dtype", "float32", "--port", "0",
                 "--draft-model", "self", "--draft-tokens", "3"]) == 2
    assert "needs a block-expanded model" in capsys.readouterr().err
