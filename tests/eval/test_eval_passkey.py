"""Passkey retrieval: prompts in every language hold a haystack of the language's embedded UDHR sentences, the
needle at the asked depth and the question last, within the asked length; exact match scores the first number of
the output, per language and per depth × length cell, and the heat map is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sailor2_jax.eval import passkey
from sailor2_jax.eval.config import TasksFile
from sailor2_jax.eval.run import Evaluator
from sailor2_jax.generate.engine import Completion
from sailor2_jax.languages import LANGUAGES
from sailor2_jax.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def encode():
    tok = load_tokenizer()
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def test_prompts_in_every_language_place_the_needle_at_its_depth(encode):
    recs = passkey.records(LANGUAGES, [512, 2048], [0.0, 0.5, 1.0], 1, 0, encode)
    assert len(recs) == len(LANGUAGES) * 2 * 3
    for r in recs:
        needle, question = (t.format(key=r["key"]) for t in passkey.NEEDLES[r["language"]])
        prompt = r["prompt"]
        assert prompt.count(needle) == 1 and prompt.endswith("\n" + question)
        assert 0.9 * r["length"] <= r["tokens"] == len(encode(prompt)) <= r["length"]
        # the share of the haystack's tokens before the needle
        where = len(encode(prompt[:prompt.index(needle)])) / (r["tokens"] - len(encode(needle)) - len(encode(question)))
        assert abs(where - r["depth"]) < 0.12, (r["language"], r["length"], r["depth"], where)
        rest = prompt.replace(needle, "").removesuffix(question)  # nothing but the language's own sentences
        for sentence in sorted(passkey.sentences(r["language"]), key=len, reverse=True):
            rest = rest.replace(sentence, "")
        assert not rest.strip(), (r["language"], rest[:80])
    keys = {r["key"] for r in recs}
    assert len(keys) > len(recs) // 2 and all(len(k) == 5 for k in keys)
    assert passkey.answer(" 12345.") == "12345" and passkey.answer("none") is None


def test_exact_match_grid_and_heat_map(loaded, tmp_path, encode, monkeypatch):
    tasks = TasksFile(batch_size=4, tasks=[{"name": "pk", "type": "passkey", "languages": ["en", "th", "zh"],
                                            "lengths": [64, 128], "depths": [0.0, 1.0], "max_new_tokens": 4}])
    evaluator = Evaluator(loaded, tasks)
    key_of = {}

    def fake_generate(prompts, **kwargs):  # answers right exactly when the needle is at depth 0 (or for zh)
        out = []
        for ids in prompts:
            text = evaluator.tok.decode(ids)
            r = next(rec for key, rec in key_of.items() if key in text)
            right = r["depth"] == 0.0 or r["language"] == "zh"
            out.append([Completion(encode(f" {r['key'] if right else '99999'}."), "length")])
        return out

    recs = passkey.records(["en", "th", "zh"], [64, 128], [0.0, 1.0], 1, 0, encode)
    key_of = {r["key"]: r for r in recs}
    assert len(key_of) == len(recs)
    monkeypatch.setattr(evaluator.generator, "generate", fake_generate)
    summary = evaluator.run(tmp_path, "tiny")
    m = summary["tasks"]["pk"]
    assert m["exact_match/zh"] == 100.0 and m["exact_match/en"] == m["exact_match/th"] == 50.0
    assert m["exact_match/len64_depth0"] == 100.0 and np.isclose(m["exact_match/len128_depth1"], 100 / 3)
    assert np.isclose(m["exact_match"], 100 * 8 / 12)
    rows = [json.loads(line) for line in (tmp_path / "pk.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all("prompt" not in r for r in rows)
    assert (tmp_path / "pk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grid = passkey.grid(rows, [64, 128], [0.0, 1.0])
    np.testing.assert_allclose(grid, [[100, 100], [100 / 3, 100 / 3]])


def test_bad_passkey_settings_are_refused():
    with pytest.raises(ValueError, match="depths must lie in"):
        TasksFile(tasks=[{"name": "pk", "type": "passkey", "depths": [1.5]}])
    with pytest.raises(ValueError, match="unknown languages"):
        TasksFile(tasks=[{"name": "pk", "type": "passkey", "languages": ["xx"]}])
