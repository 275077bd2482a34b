"""The OpenAI-compatible server through the official `openai` client (fp32 tiny random Qwen2, real vocabulary):
parity with `transformers`, streaming, continuous batching against requests served alone, seeds, logprobs against
a forward pass, bad inputs, the queue bound, disconnects, auth and metrics."""

from __future__ import annotations

import concurrent.futures
import json

import numpy as np
import openai
import pytest
import requests
import torch
from serve_helpers import SYSTEM
from transformers import AutoTokenizer

from sailor2_jax.tokenizer import EOS_ID, IM_END_ID

PROMPTS = {"th": "สวัสดีครับ", "my": "မင်္ဂလာပါ", "km": "សួស្តី", "en": "Hello there, how are you today?"}


def messages(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def chat(client, text: str, **kw):
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model="tiny", messages=messages(text), extra_body={"return_token_ids": True},
                                          **kw)


def test_greedy_chat_equals_transformers_with_the_chat_template(client, tiny):
    ref, path = tiny
    hf_tok = AutoTokenizer.from_pretrained(path)
    for text in (PROMPTS["th"], PROMPTS["en"]):
        ids = hf_tok.apply_chat_template(messages(text), add_generation_prompt=True, tokenize=True,
                                         return_dict=False)
        with torch.no_grad():
            out = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=12, do_sample=False, eos_token_id=[EOS_ID, IM_END_ID],
                               pad_token_id=EOS_ID)[0, len(ids):].tolist()
        got = chat(client, text, max_tokens=12)
        choice = got.choices[0]
        assert choice.model_extra["token_ids"] == out
        assert choice.message.content == hf_tok.decode(out, skip_special_tokens=True)
        assert got.usage.prompt_tokens == len(ids) and got.usage.completion_tokens == len(out)
        assert choice.finish_reason == "length"


@pytest.mark.parametrize("lang", ["th", "my", "km"])
def test_streamed_text_equals_non_streamed(client, lang):
    full = chat(client, PROMPTS[lang], max_tokens=20)
    chunks = list(chat(client, PROMPTS[lang], max_tokens=20, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == full.choices[0].message.content
    assert not any("\ufffd" in p for p in pieces if p) or "\ufffd" in full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens == 20


def test_sse_format_ends_with_done(server):
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 3, "stream": True, "temperature": 0}
    with requests.post(f"http://127.0.0.1:{server.port}/v1/completions", json=body, stream=True) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_concurrent_requests_each_equal_that_request_served_alone(client):
    rng = np.random.RandomState(0)
    words = "ก ข ค ง mot hai ba bon satu dua tiga empat".split()
    cases = []
    for i in range(16):
        text = " ".join(rng.choice(words, size=rng.randint(1, 10)))
        cases.append({"text": text, "max_tokens": int(rng.randint(1, 20))})
    alone = [chat(client, c["text"], max_tokens=c["max_tokens"]) for c in cases]
    for case, result in zip(cases[::2], alone[::2]):  # half of them stop on a string their own output contains
        content = result.choices[0].message.content
        if len(content) > 4:
            case["stop"] = [content[2:4], "never seen"]
            case["alone"] = chat(client, case["text"], max_tokens=case["max_tokens"], stop=case["stop"])
    for case, result in zip(cases, alone):
        case.setdefault("alone", result)
    assert sum("stop" in c for c in cases) >= 3

    def run(case):
        return chat(client, case["text"], max_tokens=case["max_tokens"], stop=case.get("stop"))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(run, cases))
    for case, got in zip(cases, together):
        want = case["alone"].choices[0]
        assert got.choices[0].message.content == want.message.content
        assert got.choices[0].finish_reason == want.finish_reason
        assert got.choices[0].model_extra["token_ids"] == want.model_extra["token_ids"]
        assert got.usage.completion_tokens == case["alone"].usage.completion_tokens
    assert any(c.choices[0].finish_reason == "stop" for c in together)


def test_n_samples_with_a_seed_are_reproducible(client):
    # (top-k/top-p draws: test_serve_engine.py, at a small vocabulary; the full sort of 151,936 logits is slow here)
    kw = dict(model="tiny", prompt="Once upon a time", max_tokens=8, n=4, temperature=1.0)
    a = client.completions.create(seed=7, **kw)
    b = client.completions.create(seed=7, **kw)
    c = client.completions.create(seed=8, **kw)
    texts = [x.text for x in a.choices]
    assert texts == [x.text for x in b.choices]
    assert len(set(texts)) > 1  # four different samples of one shared prefill
    assert texts != [x.text for x in c.choices]
    assert a.usage.completion_tokens == 32


def test_logprobs_equal_a_forward_pass(client, tiny):
    ref, path = tiny
    hf_tok = AutoTokenizer.from_pretrained(path)
    got = chat(client, PROMPTS["km"], max_tokens=6, temperature=0.8, seed=1, logprobs=True, top_logprobs=5)
    ids = hf_tok.apply_chat_template(messages(PROMPTS["km"]), add_generation_prompt=True, tokenize=True,
                                     return_dict=False)
    new = got.choices[0].model_extra["token_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(ref(torch.tensor([ids + new])).logits[0].double(), -1)[len(ids) - 1:-1]
    content = got.choices[0].logprobs.content
    assert len(content) == len(new)
    for t, entry, row in zip(new, content, logp):
        assert entry.logprob == pytest.approx(float(row[t]), abs=1e-4)
        top = torch.topk(row, 5)
        np.testing.assert_allclose([a.logprob for a in entry.top_logprobs], top.values.numpy(), atol=1e-4)
        assert [a.token for a in entry.top_logprobs] == [hf_tok.decode([int(i)]) for i in top.indices]
    # the legacy completions shape: logprobs=N alternatives
    legacy = client.completions.create(model="tiny", prompt="Hello", max_tokens=2, temperature=0, logprobs=3)
    assert len(legacy.choices[0].logprobs.token_logprobs) == 2 and len(legacy.choices[0].logprobs.top_logprobs[0]) == 3


def _post(server, path, body, **kw):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(f"http://127.0.0.1:{server.port}{path}", data=data,
                         headers={"content-type": "application/json", **kw.pop("headers", {})}, **kw)


@pytest.mark.parametrize("body, status, field", [
    ("{not json", 400, None),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": -1}, 400,
     "max_completion_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 80}]}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 60}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
    ({"model": "tiny", "messages": "hi"}, 400, "messages"),
    ({"model": "other", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 9}, 400, "n"),
])
def test_bad_input_is_a_4xx_naming_the_field_and_serving_goes_on(server, client, body, status, field):
    r = _post(server, "/v1/chat/completions", body)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["param"] == field and error["message"]
    if field:
        assert error["message"].startswith(field)
    assert chat(client, "hi", max_tokens=2).choices[0].finish_reason == "length"


def test_full_queue_answers_429(server, client):
    server.engine.max_queue = 0
    try:
        with pytest.raises(openai.RateLimitError):
            chat(client, "hi", max_tokens=2)
    finally:
        server.engine.max_queue = 256
    assert chat(client, "hi", max_tokens=2).usage.completion_tokens == 2


def test_a_disconnecting_client_frees_its_slot(server):
    before = server.app.state.metrics.completion_tokens._value.get()
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 60, "stream": True, "temperature": 0}
    with requests.post(f"http://127.0.0.1:{server.port}/v1/completions", json=body, stream=True) as r:
        next(r.iter_lines())  # the first token arrived; go away
    import time
    deadline = time.monotonic() + 5
    while server.engine.slots_in_use and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.engine.slots_in_use == 0
    assert server.app.state.metrics.completion_tokens._value.get() - before < 60  # aborted, not run to the end


def test_bearer_key_is_required_when_configured(server, client, capfd):
    import openai as oa
    server.config.api_key = "s3cret-key"
    try:
        with pytest.raises(oa.AuthenticationError):
            chat(client, "hi", max_tokens=1)
        keyed = oa.OpenAI(base_url=str(client.base_url), api_key="s3cret-key", max_retries=0)
        assert chat(keyed, "hi", max_tokens=1).usage.completion_tokens == 1
    finally:
        server.config.api_key = None
    assert "s3cret-key" not in "".join(capfd.readouterr())


def test_models_health_and_metrics(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert requests.get(f"http://127.0.0.1:{server.port}/health").status_code == 200
    text = requests.get(f"http://127.0.0.1:{server.port}/metrics").text
    for name in ("sailor2_requests_total", "sailor2_prompt_tokens_total", "sailor2_completion_tokens_total",
                 "sailor2_time_to_first_token_seconds_bucket", "sailor2_time_per_output_token_seconds_bucket",
                 "sailor2_queue_depth", "sailor2_slots_in_use"):
        assert name in text
    completed = next(float(line.split()[-1]) for line in text.splitlines()
                     if line.startswith("sailor2_completion_tokens_total"))
    assert completed > 0
