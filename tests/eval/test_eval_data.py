"""The embedded evaluation tasks: real text in all 15 languages, well-formed, and held out: no sentence of them
appears in any other embedded data (the demo's pre-training, SFT and preference text)."""

from __future__ import annotations

import json
import re

from sailor2_jax.config import DATA_DIR
from sailor2_jax.languages import LANGUAGES
from sailor2_jax.eval.config import load_tasks
from sailor2_jax.eval.task_records import read_records
from sailor2_jax.embedded.eval_tasks import HELDOUT_ARTICLES, SPLITS, TRAINING_ARTICLES, split_passage


def _rows(name):
    return [json.loads(line) for line in (DATA_DIR / "eval" / name).read_text(encoding="utf-8").splitlines()]


def _sentences(text):
    return {s.strip() for s in re.split(r"[.;:。;:!?\n]|\u104b|\u17d4", text) if len(s.strip()) >= 12}


def test_task_files_valid_in_all_languages():
    tasks = load_tasks("demo")
    for task in tasks.tasks:
        records = read_records(task, tasks.path(task.data), report=False)
        assert records.kept and not records.skipped
        langs = {r["language"].split("-")[-1] for r in records.kept} | {r["language"].split("-")[0]
                                                                          for r in records.kept}
        assert langs == set(LANGUAGES), task.name
    for r in _rows("udhr_continuation.jsonl"):
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
    assert len(_rows("udhr_perplexity.jsonl")) == 15 * len(SPLITS["perplexity"])


def test_splits_disjoint_and_held_out():
    used = [a for articles in SPLITS.values() for a in articles]
    assert len(used) == len(set(used)) and set(used) <= set(HELDOUT_ARTICLES)
    assert not set(HELDOUT_ARTICLES) & set(TRAINING_ARTICLES)
    ids = [r["id"] for r in _rows("udhr_perplexity.jsonl")]
    assert {int(i.rsplit("-a", 1)[1]) for i in ids} == set(SPLITS["perplexity"])


def test_no_eval_sentence_in_other_embedded_data():
    eval_sentences = set()
    for name in ("udhr_perplexity.jsonl", "udhr_continuation.jsonl", "udhr_translation.jsonl",
                 "udhr_translation_fewshot.jsonl"):
        for r in _rows(name):
            texts = [r.get("text"), r.get("context"), r.get("prompt"), *r.get("choices", []), *r.get("references", [])]
            for t in filter(None, texts):
                eval_sentences |= _sentences(t)
    assert len(eval_sentences) > 300
    others = [p for p in DATA_DIR.rglob("*.jsonl") if p.parent.name != "eval"]
    assert others, "the demo's embedded training text"
    for path in others:
        text = path.read_text(encoding="utf-8")
        shared = [s for s in eval_sentences if s in text]
        assert not shared, f"{path} holds held-out evaluation text: {shared[:3]}"


def test_split_passage_keeps_graphemes():
    head, tail = split_passage("ทุกคนมีสิทธิ")
    assert head + tail == "ทุกคนมีสิทธิ" and tail[0] not in "ิีุ่้"
    head, tail = split_passage("Everyone has the right to life")
    assert tail.startswith(" ") and head + tail == "Everyone has the right to life"
