"""Translation end to end with a tiny random M2M100 model and a BPE tokenizer built here: every record translated
or rejected with its reason, fields kept, long documents segmented and reassembled, CTranslate2 (converted by its
own converter) and transformers giving the same greedy translation, preference records, the CLI."""

import gzip
import json
from pathlib import Path

import pytest
from datatrove_helpers import read_records, write_jsonl

from sailor2_jax.cli import main
from sailor2_jax.embedded.synthetic import udhr_lines
from sailor2_jax.data.translate import TranslateConfig, run_translate
from sailor2_jax.demo.fixtures import make_tiny_translator
from sailor2_jax.languages import FLORES
from sailor2_jax.data.translate.engine import language_token
from sailor2_jax.data.translate.segment import join_document, split_document

pytest.importorskip("transformers")
pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_translator(tmp_path_factory.mktemp("m2m") / "model")


EN = udhr_lines("en")
LONG_SENTENCE = " ".join(EN)  # one paragraph of several sentences: cut into segments


def _records():
    return [
        {"id": "a", "text": "\n".join(EN[:3]), "url": "https://x.org/a", "meta": {"k": 1}},
        {"id": "b", "text": LONG_SENTENCE.replace(".", ",")},  # a single very long "sentence"
        {"id": "c", "text": EN[3]},
        {"id": "empty", "text": "  "},
        {"id": "none"},
        {"id": "number", "text": 7},
        {"id": "long", "text": "word " * 3000},
    ]


def _config(model, **kw):
    base = dict(model=model, targets=["th", "vi"], beam_size=1, max_output_tokens=12, max_segment_tokens=40,
                max_document_chars=10_000, compute_type="float32", progress=False)
    return TranslateConfig(**{**base, **kw})


def _outputs(out: Path, target: str) -> dict:
    return {r["id"]: r for r in read_records(out / target)}


def test_translate_end_to_end_and_engines_agree(model, tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", _records() + ['{"id": "broken"'])
    runs = {}
    for engine in ("ctranslate2", "transformers"):
        out = tmp_path / engine
        summary = run_translate([str(tmp_path / "in")], out, _config(model, engine=engine))
        assert summary["records"] == {"read": 8, "unreadable": 1, "balanced": True}
        assert summary["engine"]["engine"] == engine
        for target in ("th", "vi"):
            t = summary["targets"][target]
            assert t["translated"] == 3
            assert t["rejected"] == {"empty": 2, "unsupported_field": 1, "too_long": 1}
        rejected = read_records(out / "rejected")
        assert len(rejected) == 1 + 2 * 4  # the broken line once, four rejections per target
        assert {(r["_rejection"]["reason"], r["_rejection"].get("target")) for r in rejected if r.get("id") == "none"} \
            == {("empty", "th"), ("empty", "vi")}
        runs[engine] = {t: _outputs(out, t) for t in ("th", "vi")}
    assert (tmp_path / "ctranslate2" / "ct2-model" / "model.bin").is_file()  # converted by CTranslate2's converter
    th = runs["ctranslate2"]["th"]
    a = th["a"]
    assert (a["url"], a["meta"], a["language"], a["translated_from"]) == ("https://x.org/a", {"k": 1}, "th", "en")
    assert len(a["text"].split("\n")) == 3  # paragraphs reassembled in place
    assert len({r["text"] for r in th.values()}) == 3  # different inputs, different outputs
    # the same model, greedy, fp32: CTranslate2 and transformers emit the same tokens
    assert runs["ctranslate2"] == runs["transformers"]


def test_conversion_from_a_relative_directory(model, tmp_path, monkeypatch):
    """CTranslate2's converter copies `copy_files` by name from inside the model directory: a directory given
    relative to the working directory (what a user types) converts, tokenizer files included."""
    from sailor2_jax.data.translate.engine import convert_to_ctranslate2

    monkeypatch.chdir(model.parent)
    out = convert_to_ctranslate2(Path(model.name), tmp_path / "ct2")
    assert (out / "model.bin").is_file() and (out / "tokenizer.json").is_file()


def test_preference_records_and_shards(model, tmp_path):
    pref = [{"id": f"p{i}", "prompt": EN[i], "chosen": [{"role": "user", "content": EN[i]},
                                                       {"role": "assistant", "content": EN[i + 1]}],
             "rejected": [{"role": "user", "content": EN[i]}, {"role": "assistant", "content": "No."}], "score": i}
            for i in range(4)]
    pref.append({"id": "half", "prompt": EN[0], "chosen": "fine"})  # no `rejected`
    write_jsonl(tmp_path / "in" / "a.jsonl", pref[:3])
    write_jsonl(tmp_path / "in" / "b.jsonl", pref[3:])
    cfg = _config(model, targets=["id"], fields=["prompt", "chosen", "rejected"], engine="ctranslate2",
                  executor={"tasks": 2})
    summary = run_translate([str(tmp_path / "in")], tmp_path / "out", cfg)
    assert summary["targets"]["id"] == {"translated": 4, "rejected": {"empty": 1}}
    out = _outputs(tmp_path / "out", "id")
    p = out["p1"]
    assert [m["role"] for m in p["chosen"]] == ["user", "assistant"] and p["score"] == 1
    assert p["chosen"][0]["content"] == p["prompt"]  # the same text, the same translation
    assert p["chosen"][1]["content"] != EN[2]


def test_segments_fit_the_budget_and_reassemble():
    def count(texts):  # one token per word, plus the language token and </s>
        return [len(t.split()) + 2 for t in texts]

    text = "\n".join([EN[0], "", LONG_SENTENCE.replace(".", ","), EN[1]])
    paragraphs = split_document(text, "en", count, max_tokens=30)
    assert len(paragraphs) == 3  # empty lines dropped
    assert all(count([s])[0] <= 30 for p in paragraphs for s in p)
    assert len(paragraphs[1]) > 1 and " ".join(paragraphs[1]) == LONG_SENTENCE.replace(".", ",")
    assert len(paragraphs[0]) >= 2  # ICU sentences
    assert join_document(paragraphs, "en").split("\n")[0] == EN[0]
    assert join_document([["你好。", "再见。"]], "zh") == "你好。再见。"


def test_language_tokens():
    vocab = {"tha_Thai": 5, "__vi__": 6}
    assert language_token(vocab, "th") == "tha_Thai"
    assert language_token(vocab, "vie") == "__vi__"  # M2M100's token, from an ISO 639-3 code
    with pytest.raises(ValueError, match="no token for language 'km' .*khm_Khmr, __km__"):
        language_token(vocab, "km")
    assert len(FLORES) == 15


def test_engine_failure_is_a_counted_rejection(model, tmp_path, monkeypatch):
    from sailor2_jax.data.translate.engine import CTranslate2Engine

    real = CTranslate2Engine.translate

    def flaky(self, texts, source, target):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("out of memory")
        return real(self, texts, source, target)

    monkeypatch.setattr(CTranslate2Engine, "translate", flaky)
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "ok", "text": EN[0]}, {"id": "bad", "text": "BOOM " + EN[1]}])
    summary = run_translate([str(tmp_path / "in")], tmp_path / "out", _config(model, targets=["th"],
                                                                            engine="ctranslate2"))
    assert summary["targets"]["th"] == {"translated": 1, "rejected": {"failed": 1}}
    (bad,) = read_records(tmp_path / "out" / "rejected")
    assert bad["id"] == "bad" and "out of memory" in bad["_rejection"]["detail"]


@pytest.mark.parametrize("kind", ["slurm", "ray"])
def test_translation_runs_on_the_cluster_executors(model, tmp_path, kind):
    """The same stages on Slurm or Ray, a GPU per task (the executors are built, nothing is launched)."""
    from sailor2_jax.data.stages.executor import executor
    from sailor2_jax.data.translate.pipeline import stages

    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": EN[0]}])
    cfg = _config(model, engine="transformers", executor={"kind": kind, "tasks": 4, kind: {"gpus_per_task": 1}})
    plan = stages([str(tmp_path / "in.jsonl")], tmp_path / "out", cfg, "transformers", str(model))
    built = [executor(cfg.executor, name, pipeline, tasks, str(tmp_path / "logs" / name), None)
             for name, pipeline, tasks in plan]
    assert [(type(e).__name__, e.world_size, e.gpus_per_task) for e in built] == [
        (f"{kind.capitalize()}PipelineExecutor", 4, 1), (f"{kind.capitalize()}PipelineExecutor", 1, 1)]


def test_cli(model, tmp_path, capsys):
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": EN[0]}])
    rc = main(["translate", "--model", str(model), "--input", str(tmp_path / "in.jsonl"), "--output-dir",
               str(tmp_path / "out"), "--target", "th,ms", "--beam-size", "1", "--compute-type", "int8"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "en → th: translated 1" in printed and "en → ms: translated 1" in printed and "int8" in printed
    with gzip.open(tmp_path / "out" / "ms" / "00000.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["language"] == "ms"
    rc = main(["translate", "--model", str(model), "--input", str(tmp_path / "in.jsonl"), "--output-dir",
               str(tmp_path / "out"), "--target", "xx"])
    assert rc == 2 and "unknown language 'xx'" in capsys.readouterr().err
