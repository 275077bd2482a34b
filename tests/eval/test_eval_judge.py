"""The judge task (Sea-WildBench's rules): the scoring rules on hand-computed cases; `sailor2-jax judge` end to end
against a fake OpenAI-compatible server started here (answers, references and the judge all behind it; failures
retried, the key never shown, a rerun served from the cache); the reward-model judge and the demo stage on tiny
random models; the Sea-WildBench release converter."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException, Request  # module level: the route's annotations resolve here

from sailor2_jax.cli import main
from sailor2_jax.config import DATA_DIR
from sailor2_jax.eval import judge as J

sys.path.insert(0, str(Path(__file__).parents[1] / "post"))


# --- rules -----------------------------------------------------------------------------------------------------------

def test_rules():
    assert J.truncate_words("a b c", 3) == "a b c" and J.truncate_words("a  b c d", 2) == "a b ... (truncated)"
    sides = [J.model_is_a(f"id{i}", 0) for i in range(200)]
    assert sides == [J.model_is_a(f"id{i}", 0) for i in range(200)] and 60 < sum(sides) < 140
    assert sides != [J.model_is_a(f"id{i}", 1) for i in range(200)]
    assert J.parse_choice('noise {"analysis of A": "x", "choice": "B+"} tail') == "B+"
    assert J.parse_choice('{"choice": "A++", broken') == "A++" and J.parse_choice("A is better") is None
    assert J.parse_choice('{"choice": "C"}') is None
    assert J.model_reward("A++", True) == 1.0 and J.model_reward("A++", False) == -1.0
    assert J.model_reward("B+", False) == 0.5 and J.model_reward("A=B", True) == 0.0
    # K = 500: a slight win by a response 501 characters longer is a tie; 500 longer, a loss, a much-win stay
    assert J.length_rule(0.5, 1501, 1000, 500) == 0.0 and J.length_rule(0.5, 1500, 1000, 500) == 0.5
    assert J.length_rule(-0.5, 1000, 1501, 500) == 0.0 and J.length_rule(-0.5, 1501, 1000, 500) == -0.5
    assert J.length_rule(1.0, 5000, 10, 500) == 1.0 and J.length_rule(0.5, 5000, 10, -1) == 0.5


def test_aggregate_by_hand():
    items = [{"language": "th", "reward": 1.0, "model_consistent": True},
             {"language": "th", "reward": -0.5, "model_consistent": True},
             {"language": "th", "dropped": "model_truncated", "model_consistent": True},
             {"language": "vi", "reward": 0.5, "model_consistent": False},
             {"language": "vi", "reward": 0.0, "model_consistent": True}]
    m = J.aggregate(items, bootstrap=500, seed=3)
    assert m["score"] == pytest.approx((1.0 / 4 + 1) / 2) and m["judged"] == 4 and m["dropped"] == 1
    assert m["score/th"] == pytest.approx((0.25 + 1) / 2) and m["dropped/th"] == 1
    assert m["score/vi"] == pytest.approx((0.25 + 1) / 2) and m["win_rate/vi"] == 0.5
    assert m["language_consistency"] == 80.0 and m["language_consistency/vi"] == 50.0
    assert m["win_much"] == 1 and m["lose"] == 1 and m["tie"] == 1 and m["win"] == 1
    assert m["score_ci_low"] <= m["score"] <= m["score_ci_high"] and m["score_ci_low"] < m["score_ci_high"]
    assert m["win_rate_ci_low"] <= m["win_rate"] == 0.5 <= m["win_rate_ci_high"]
    assert J.aggregate(items, bootstrap=500, seed=3) == m  # seeded


# --- a fake OpenAI-compatible server ----------------------------------------------------------------------------------

GOOD = {"th": "ปิดก๊อกน้ำขณะแปรงฟัน และซ่อมท่อน้ำที่รั่วทันที",
        "vi": "Khóa vòi nước khi đánh răng và sửa ống nước bị rò rỉ."}
WRONG_LANGUAGE = "Turn off the tap while brushing your teeth and fix leaking pipes."
KEY = "sk-test-secret-value-123"


@pytest.fixture(scope="module")
def server():
    """/v1/chat/completions: model `test` answers GOOD (th) or in English (vi); model `ref` answers a short GOOD;
    model `judge` prefers the longer response, slightly (A+/B+), and fails its first call on each request with 503;
    every call is counted by model; the Authorization header must carry KEY for the judge."""
    import uvicorn

    app, calls, seen = FastAPI(), {"test": 0, "ref": 0, "judge": 0, "judge_503": 0, "json_mode": 0}, set()

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        model, text = body["model"], body["messages"][-1]["content"]
        calls[model] += 1
        if model == "judge":
            calls["json_mode"] += body.get("response_format") == {"type": "json_object"}
            if request.headers.get("authorization") != f"Bearer {KEY}":
                raise HTTPException(401)
            if text not in seen:
                seen.add(text)
                calls["judge_503"] += 1
                raise HTTPException(503)
            a = text.split("<|begin_of_response_A|>")[1].split("<|end_of_response_A|>")[0]
            b = text.split("<|begin_of_response_B|>")[1].split("<|end_of_response_B|>")[0]
            content = json.dumps({"analysis of A": "...", "choice": "A+" if len(a) >= len(b) else "B+"})
        elif model == "test":
            content = GOOD["th"] if "ประหยัด" in text else WRONG_LANGUAGE
        else:
            content = GOOD["th"][:12] if "ประหยัด" in text else GOOD["vi"][:20]
        return {"id": "x", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}]}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", calls
    srv.should_exit = True
    thread.join(timeout=10)


def _prompts(path: Path) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "p-th", "language": "th", "prompt": "ช่วยบอกวิธีประหยัดน้ำ", "checklist": ["Practical?"]},
        {"id": "p-vi", "language": "vi", "prompt": "Làm sao để tiết kiệm nước?", "checklist": []},
        {"id": "bad", "prompt": "no language"}]) + "\n", encoding="utf-8")
    return path


def test_judge_against_an_openai_compatible_server(server, tmp_path, monkeypatch, capsys):
    url, calls = server
    monkeypatch.setenv("JUDGE_KEY", KEY)
    monkeypatch.setattr("sailor2_jax.eval.judge_backends.time.sleep", lambda s: None)  # backoff without waiting
    prompts = _prompts(tmp_path / "prompts.jsonl")
    argv = ["judge", "--prompts", str(prompts), "--output-dir", str(tmp_path / "out"), "--answers-url", url,
            "--answers-model", "test", "--reference-url", url, "--reference-model", "ref", "--judge-url", url,
            "--judge-model", "judge", "--judge-key-env", "JUDGE_KEY", "--k", "500", "--bootstrap", "100"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert f"{prompts}:3: `language`" in printed.out and "prompt skipped" in printed.out
    items = {it["id"]: it for it in map(json.loads, (tmp_path / "out" / "judge.jsonl").read_text().splitlines())}
    # th: the model's answer is longer, the judge says slightly better: +0.5 (42 more characters, under K)
    th = items["p-th"]
    assert th["choice"] == ("A+" if th["model_is_a"] else "B+") and th["reward"] == 0.5 and th["model_consistent"]
    # vi: the model answered in English: a critical failure whatever the judge said
    assert not items["p-vi"]["model_consistent"] and items["p-vi"]["model_language"] == "en"
    assert items["p-vi"]["reward"] == -1.0 and items["p-vi"]["reward_judge"] == 0.5
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    m = results["tasks"]["judge"]
    assert m["score"] == pytest.approx((0.5 - 1.0) / 2 / 2 + 0.5) and m["score/th"] == 0.75 and m["score/vi"] == 0.0
    assert m["language_consistency"] == 50.0 and results["records"]["judge"] == {"read": 3, "scored": 2, "skipped": 1}
    assert calls["judge"] == 4 and calls["judge_503"] == 2  # each request failed once, retried once
    assert calls["json_mode"] == 4 and calls["test"] == calls["ref"] == 2
    for text in (printed.out, printed.err, *(p.read_text() for p in (tmp_path / "out").iterdir())):
        assert KEY not in text
    # a rerun asks nothing: every answer and every judgement is in the caches
    before = dict(calls)
    assert main(argv) == 0
    assert calls == before and json.loads((tmp_path / "out" / "results.json").read_text())["judge_calls"] == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]["judge"] == m


def test_endpoint_errors_are_named(server, monkeypatch):
    from sailor2_jax.eval.judge_backends import Endpoint, EndpointError
    url, _ = server
    with pytest.raises(ValueError, match="NOPE_KEY is not set"):
        Endpoint(url, "judge", "NOPE_KEY")
    monkeypatch.setenv("WRONG", "not-the-key")
    with pytest.raises(EndpointError, match="HTTP 401 after 1 tries"):  # not retried: the request is wrong
        Endpoint(url, "judge", "WRONG").chat([{"role": "user", "content": "x"}], max_tokens=4)
    dead = Endpoint("http://127.0.0.1:9", "m", retries=2, backoff=0.0, sleep=lambda s: None)
    with pytest.raises(EndpointError, match="after 3 tries"):
        dead.chat([{"role": "user", "content": "x"}], max_tokens=4)


def test_cache_survives_a_torn_line(tmp_path):
    from sailor2_jax.eval.judge_backends import JudgeCache
    cache = JudgeCache(tmp_path / "c.jsonl")
    key = JudgeCache.key("j", [{"role": "user", "content": "q"}])
    cache.put(key, "answer")
    with (tmp_path / "c.jsonl").open("a") as f:
        f.write('{"key": "abc", "outp')  # a crash mid-write
    again = JudgeCache(tmp_path / "c.jsonl")
    assert again.get(key) == "answer" and again.get("abc") is None
    assert JudgeCache.key("j", [{"role": "user", "content": "q"}]) != JudgeCache.key("k", [{"role": "user",
                                                                                          "content": "q"}])


def test_sea_wildbench_converter(tmp_path, capsys):
    rows = [{"session_id": "s1", "language": "tha", "conversation_input": [{"role": "user", "content": "สวัสดี",
                                                                            "language": "Thai"}],
             "checklist": ["Polite?"], "references": {"gpt-4o-2024-08-06": "สวัสดีครับ"}, "primary_tag": "Chat"},
            {"session_id": "s2", "language": "zsm", "conversation_input": [{"role": "user", "content": "Hai"}],
             "checklist": [], "references": {}, "primary_tag": "Chat"},
            {"session_id": "s3", "language": "vie"}]
    src = tmp_path / "swb.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken\n", encoding="utf-8")
    assert main(["eval-import", "sea-wildbench", "--src", str(src), "--output-dir", str(tmp_path / "out")]) == 0
    assert "2 prompts (2 rejected)" in capsys.readouterr().out
    from sailor2_jax.eval.judge_data import read_judge_prompts
    prompts, rejected = read_judge_prompts(tmp_path / "out" / "sea_wildbench.jsonl")
    assert not rejected and [p.language for p in prompts] == ["th", "ms"]
    assert prompts[0].reference == "สวัสดีครับ" and prompts[0].messages == [{"role": "user", "content": "สวัสดี"}]
    assert prompts[1].reference is None


def test_embedded_prompts_cover_15_languages():
    from sailor2_jax.languages import LANGUAGES
    from sailor2_jax.eval.judge_data import read_judge_prompts
    from sailor2_jax.post.verifier import LanguageVerifier
    prompts, rejected = read_judge_prompts(DATA_DIR / "eval" / "judge_prompts.jsonl")
    assert not rejected and sorted({p.language for p in prompts}) == sorted(LANGUAGES)
    verifier = LanguageVerifier()
    # lid.176 finds every language in at least one of its reference answers (it is weak on Javanese text)
    for lang in LANGUAGES:
        assert any(verifier.verdict(p.reference, lang).consistent for p in prompts if p.language == lang), lang


# --- the reward judge and the demo stage ---------------------------------------------------------------------------

def test_demo_stage_with_the_reward_judge(tmp_path, monkeypatch):
    from reward_helpers import policy_dir, reward_dir
    from rich.console import Console

    policy_dir(tmp_path / "hf_final", seed=1)
    reward_dir(tmp_path / "reward_hf", seed=2)
    from sailor2_jax.demo import judge as demo_judge
    from sailor2_jax.demo.stage import Context

    console = Console(record=True, width=140)
    result = demo_judge.run(Context(out=tmp_path, console=console))
    assert all(result.checks.values()), result.checks
    printed = console.export_text()
    assert "sailor2-jax judge --model" in printed
    items = [json.loads(x) for x in (tmp_path / "judge" / "judge.jsonl").read_text().splitlines()]
    judged = [it for it in items if "reward" in it]
    assert judged and result.summary["judged"] == len(judged)
    # the reward judge's choice follows its two scores and the A/B order
    for it in judged:
        scores = json.loads(it["judge_output"])
        margin = scores["reward_a"] - scores["reward_b"]
        expected = "A=B" if abs(margin) < 0.1 else ("A" if margin > 0 else "B") + ("+" if abs(margin) < 1 else "++")
        assert it["choice"] == expected
