"""The whole run: bad input is counted and routed with its reason, nothing is lost; wrong-language documents and
frequent boilerplate lines go; the CLI works end to end; configs fail with the bad field named."""

import base64
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove_helpers import read_records, write_jsonl

from sailor2_jax.cli import main
from sailor2_jax.data.clean import load_clean_config, run_clean
from sailor2_jax.demo.fixtures import NOTICE, build_demo_corpus
from sailor2_jax.embedded.synthetic import synthetic_document

GOOD = synthetic_document("en", random.Random(0), 300)

BAD_LINES = {
    "malformed_json": '{"id": "m", "text": "unterminated',
    "invalid_utf8": b'{"id": "u", "text": "caf\xe9 au lait"}',
    "not_a_json_object": '["a", "list"]',
    "missing_text": '{"id": "no-text", "url": "https://x.org"}',
    "non_string_text": '{"id": "num", "text": 12345}',
    "empty_text": '{"id": "empty", "text": " \\n\\t "}',
    "invalid_unicode": '{"id": "surrogate", "text": "lone \\ud800 surrogate"}',
    "huge_document": json.dumps({"id": "huge", "text": "word " * 500_000, "language": "en"}),  # 2.5 MB
    "malformed_json ": "[" * 100_000 + "]" * 100_000,  # deeper than Python's stack (same reason, one more)
}


def test_bad_input_is_counted_and_routed(clean, tmp_path):
    rng = random.Random(1)
    good = [{"id": f"g{i}", "text": synthetic_document("en", rng, 300), "language": "en", "source": "crawl-7"}
            for i in range(5)]
    lines = good[:2] + list(BAD_LINES.values()) + good[2:]
    jsonl = write_jsonl(tmp_path / "in" / "a.jsonl", lines)
    table = pa.table({"id": ["p1", "p2", "p3"], "text": [synthetic_document("en", rng, 300), "", None],
                      "language": ["en", "en", "en"]})
    binary = pa.table({"id": ["p4"], "text": [b"bytes, not text"]})
    parquet = tmp_path / "in" / "b.parquet"
    pq.write_table(table, parquet)
    pq.write_table(binary, tmp_path / "in" / "c.parquet")
    summary, kept, rejected = clean([jsonl, parquet, tmp_path / "in" / "c.parquet"], executor={"tasks": 2})

    read = len(lines) + 4
    d = summary["documents"]
    assert (d["read"], d["kept"] + d["rejected"], d["balanced"]) == (read, read, True)
    assert len(kept) + len(rejected) == read
    assert summary["message"].startswith("accounting holds")
    reasons = [r["_rejection"]["reason"] for r in rejected if r["_rejection"]["step"] == "read"]
    expected = [k.strip() for k in BAD_LINES] + ["empty_text", "non_string_text", "non_string_text"]  # parquet
    assert sorted(reasons) == sorted(expected)
    by_reason = {}
    for r in rejected:  # the first record of each reason (line order)
        by_reason.setdefault(r["_rejection"]["reason"], r)
    assert by_reason["malformed_json"]["raw"] == BAD_LINES["malformed_json"]
    assert base64.b64decode(by_reason["invalid_utf8"]["raw_base64"]) == BAD_LINES["invalid_utf8"]
    assert by_reason["malformed_json"]["_rejection"]["line"] == 3  # 1-based line in its file
    assert by_reason["non_string_text"]["text"] in (12345, None)
    assert {r["id"] for r in kept} == {"g0", "g1", "g2", "g3", "g4", "p1"}
    assert all(r["source"] == "crawl-7" for r in kept if r["id"].startswith("g"))  # input fields kept
    counts = summary["totals"]["read"]["removed"]
    assert sum(counts.values()) == len(BAD_LINES) + 3


def test_truncated_gzip_is_read_up_to_the_cut(clean, tmp_path):
    rng = random.Random(7)
    docs = [{"id": f"t{i}", "text": synthetic_document("en", rng, 300), "language": "en"} for i in range(40)]
    whole = write_jsonl(tmp_path / "whole.jsonl.gz", docs).read_bytes()
    cut = tmp_path / "in" / "cut.jsonl.gz"
    cut.parent.mkdir()
    cut.write_bytes(whole[: len(whole) // 2])
    summary, kept, rejected = clean([cut], heuristics=False, lid=False)
    reasons = [r["_rejection"]["reason"] for r in rejected]
    assert reasons.count("unreadable_file") == 1  # the rest of the file, with the error in `raw`
    assert set(reasons) <= {"unreadable_file", "malformed_json"}  # a line cut in the middle, if any
    assert 0 < len(kept) < 40 and [r["id"] for r in kept] == [f"t{i}" for i in range(len(kept))]
    assert summary["documents"]["balanced"]


def test_every_step_can_be_switched_off(clean, tmp_path):
    """With only reading and normalisation left, every parseable document is kept; more tasks than files is fine."""
    lines = [{"id": "a", "text": GOOD, "language": "en"}, {"id": "b", "text": GOOD, "language": "en"},
             BAD_LINES["malformed_json"]]
    summary, kept, rejected = clean(lines, executor={"tasks": 3}, url_dedup=False, exact_dedup=False,
                                    heuristics=False, lid=False, minhash={"enabled": False},
                                    substring_dedup={"enabled": False}, frequent_lines={"enabled": False})
    assert [r["id"] for r in kept] == ["a", "b"]
    assert [r["_rejection"]["reason"] for r in rejected] == ["malformed_json"]
    assert list(summary["steps"]) == ["read", "normalise"]


def test_wrong_language_rejected_and_confusable_pairs_accepted(clean):
    rng = random.Random(2)
    records = [
        {"id": "km-as-th", "text": synthetic_document("km", rng, 300), "language": "th"},
        {"id": "id-as-tl", "text": synthetic_document("id", rng, 300), "language": "tl"},
        {"id": "en-as-ceb", "text": synthetic_document("en", rng, 300), "language": "ceb"},
        # fastText calls this Malay text Indonesian; pycld2's second opinion keeps it
        {"id": "ms", "text": synthetic_document("ms", rng, 300), "language": "zsm"},
        {"id": "war", "text": synthetic_document("war", rng, 300), "language": "war"},
        {"id": "vi", "text": synthetic_document("vi", rng, 300)},  # no field: --language / config.language
    ]
    _, kept, rejected = clean(records, language="vi", heuristics=False)
    assert {r["id"] for r in kept} == {"ms", "war", "vi"}
    assert {r["id"]: (r["_rejection"]["step"], r["_rejection"]["reason"]) for r in rejected} == {
        "km-as-th": ("lid", "wrong_language"), "id-as-tl": ("lid", "wrong_language"),
        "en-as-ceb": ("lid", "wrong_language")}
    assert next(r for r in kept if r["id"] == "vi")["language"] == "vi"


def test_language_guessed_when_not_given(clean):
    rng = random.Random(6)
    german = ("Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und Gewissen "
              "begabt und sollen einander im Geist der Brüderlichkeit begegnen. ") * 3
    records = [{"id": "th", "text": synthetic_document("th", rng, 300)}, {"id": "de", "text": german}]
    _, kept, rejected = clean(records, heuristics=False)
    assert [(r["id"], r["language"]) for r in kept] == [("th", "th")]
    assert [(r["id"], r["_rejection"]["reason"]) for r in rejected] == [("de", "unsupported_language")]
    assert rejected[0]["_rejection"]["lid"]["top2"][0][0] == "de"  # what fastText guessed, for auditing


def test_frequent_boilerplate_lines_removed(clean):
    rng = random.Random(4)
    boiler = "Share this article on Facebook Twitter WhatsApp"
    rare = "Read the second part of this series tomorrow"
    records = []
    for i in range(12):
        text = synthetic_document("en", rng, 250)
        text += "\n" + boiler
        if i < 5:  # five occurrences: at the limit, kept
            text += "\n" + rare
        records.append({"id": f"d{i}", "text": text, "language": "en"})
    summary, kept, _ = clean(records, frequent_lines={"max_count": 5, "bucket_docs": 1000})
    assert len(kept) == 12
    assert not any(boiler in r["text"] for r in kept)
    assert sum(rare in r["text"] for r in kept) == 5
    fl = summary["totals"]["frequent_lines"]
    assert fl["bytes_in"] - fl["bytes_out"] == 12 * len(("\n" + boiler).encode())


def test_frequent_lines_count_once_per_document(clean):
    """A line repeated inside one document is not frequent; a line in more than max_count documents is, and the
    second heuristic pass judges the texts it shortened."""
    rng = random.Random(6)
    refrain = "We shall overcome some day in this land"
    boiler = "Share this article on Facebook Twitter WhatsApp"
    records = [{"id": "song", "text": synthetic_document("en", rng, 800) + ("\n" + refrain) * 6, "language": "en"}]
    records += [{"id": f"d{i}", "text": synthetic_document("en", rng, 250) + "\n" + boiler, "language": "en"}
                for i in range(6)]
    # a page that is mostly the boilerplate: the filters pass it, and fail it once the boilerplate is gone
    menu = [boiler, "Home News Sport Contact", "and it is one of the things that we all have to do"]
    records.append({"id": "menu", "text": "\n".join(menu), "language": "en"})
    # substring dedup off: it would cut the refrain's repeats (a span over 100 bytes occurring twice)
    summary, kept, rejected = clean(records, lid=False, substring_dedup={"enabled": False},
                                    frequent_lines={"max_count": 5, "bucket_docs": 1000})
    by_id = {r["id"]: r["text"] for r in kept}
    assert by_id["song"].count(refrain) == 6  # 6 times in 1 document: counted once
    assert all(boiler not in by_id[f"d{i}"] for i in range(6))  # in 7 documents: removed from all
    assert [(r["id"], r["_rejection"]["step"], r["_rejection"]["reason"]) for r in rejected] == [
        ("menu", "second_pass", "too_few_words")]


def test_frequent_lines_are_counted_per_bucket(clean):
    """The same 12 documents with buckets of 1 document (12 buckets): no bucket sees the line more than 5 times."""
    rng = random.Random(4)
    boiler = "Share this article on Facebook Twitter WhatsApp"
    records = [{"id": f"d{i}", "text": synthetic_document("en", rng, 250) + "\n" + boiler, "language": "en"}
               for i in range(12)]
    _, kept, _ = clean(records, frequent_lines={"max_count": 5, "bucket_docs": 1})
    assert len(kept) == 12 and all(boiler in r["text"] for r in kept)


def test_language_cutoff_comes_from_the_config(clean):
    rng = random.Random(8)
    records = [{"id": "id", "text": synthetic_document("id", rng, 300), "language": "id"}]
    _, kept, _ = clean(records)
    assert [r["id"] for r in kept] == ["id"]  # fastText gives this Indonesian text p ≈ 0.9 ≥ 0.7
    _, kept, rejected = clean(records, languages={"id": {"lid_min": 0.999}})
    assert not kept
    assert (rejected[0]["_rejection"]["step"], rejected[0]["_rejection"]["reason"]) == ("lid", "low_confidence")


def test_cli_end_to_end(tmp_path, capsys):
    rng = random.Random(5)
    docs = [{"id": f"t{i}", "text": synthetic_document("th", rng, 300)} for i in range(4)]
    docs.append(dict(docs[0], id="t0-copy"))
    write_jsonl(tmp_path / "in" / "th.jsonl.gz", docs)
    config = tmp_path / "c.yaml"
    config.write_text("executor: {tasks: 1}\nprogress: false\nfrequent_lines: {max_count: 5}\n")
    rc = main(["clean", "--input", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
               "--config", str(config), "--language", "th"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "accounting holds: kept 4 + rejected 1 = read 5" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"]["exact_dedup"]["th"]["removed"] == {"exact_duplicate": 1}
    assert (tmp_path / "out" / "summary.png").stat().st_size > 10_000
    assert len(read_records(tmp_path / "out" / "kept")) == 4


def test_unbalanced_accounting_is_an_error(tmp_path):
    from sailor2_jax.data.clean import AccountingError
    from sailor2_jax.data.clean.summary import check_balance

    summary = {"documents": {"read": 10, "kept": 6, "rejected": 3, "balanced": False}}
    with pytest.raises(AccountingError, match="kept 6 \\+ rejected 3 = 9 ≠ read 10"):
        check_balance(summary, tmp_path / "summary.json")


def test_cli_reports_bad_config(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("minhash: {bands: 30, rows: 10}\n")
    rc = main(["clean", "--input", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--config", str(config)])
    assert rc == 2
    assert "exceeds num_perm" in capsys.readouterr().err


@pytest.mark.parametrize("yaml_text, field", [
    ("executor: {kind: spark}", "executor.kind"),
    ("languages: {th: {words_min: -1}}", "languages.th: words_min"),
    ("frequent_lines: {max_count: 0}", "frequent_lines.max_count"),
    ("minhash: {num_perm: many}", "minhash.num_perm"),
    ("unknown_key: 1", "unknown_key"),
])
def test_config_errors_name_the_field(tmp_path, yaml_text, field):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as e:
        load_clean_config(path)
    assert str(path) in str(e.value)


def test_demo_corpus_cleans_and_balances(tmp_path):
    """The demo's cleaning stage: the planted-trouble corpus through the packaged demo config."""
    planted = build_demo_corpus(tmp_path / "demo" / "input")
    summary = run_clean([str(tmp_path / "demo" / "input")], tmp_path / "demo", load_clean_config("demo"))
    assert summary["documents"]["balanced"] and summary["documents"]["read"] == planted["documents"]
    totals = summary["totals"]
    assert totals["exact_dedup"]["removed"]["exact_duplicate"] == planted["exact_duplicates"]
    assert totals["url_dedup"]["removed"]["shorter_duplicate_url"] == planted["url_duplicates"]
    assert sum(totals["read"]["removed"].values()) == planted["bad_lines"]
    # every copy of the notice is cut (with the bytes around it that all copies share), in both shards
    cut = totals["substring_dedup"]["bytes_in"] - totals["substring_dedup"]["bytes_out"]
    assert planted["repeated_notices"] * len(NOTICE) <= cut <= planted["repeated_notices"] * (len(NOTICE) + 4)
    kept = read_records(tmp_path / "demo" / "kept")
    assert kept and not any(NOTICE[:50] in r["text"] for r in kept)
    assert "accounting holds" in summary["message"]


@pytest.mark.parametrize("kind, cls", [("slurm", "SlurmPipelineExecutor"), ("ray", "RayPipelineExecutor")])
@pytest.mark.parametrize("substring", [False, True])
def test_executor_kind_comes_from_config(tmp_path, kind, cls, substring):
    """Slurm and Ray executors are built from the config with the same chained stages (nothing is launched)."""
    from sailor2_jax.data.clean.config import CleanConfig
    from sailor2_jax.data.stages.executor import executor
    from sailor2_jax.data.clean.pipeline import stages

    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": GOOD}])
    config = CleanConfig(executor={"kind": kind, "tasks": 4, "workers": 4}, substring_dedup={"enabled": substring})
    chain = []
    plan = stages([str(tmp_path / "in")], str(tmp_path / "out"), config)
    for name, pipeline, tasks in plan:
        logs = str(tmp_path / "logs" / name)
        chain.append(executor(config.executor, name, pipeline, tasks, logs, chain[-1] if chain else None))
    names = ["analyse", "decide", *(["substring-index", "substring-exchange", "substring-find"] if substring else []),
             "frequent-lines", "apply", "summarise"]
    assert [name for name, _, _ in plan] == names
    assert [type(e).__name__ for e in chain] == [cls] * len(names)
    assert [e.world_size for e in chain] == [1 if n in ("decide", "frequent-lines", "summarise") else 4 for n in names]
    assert all(e.depends is prev for e, prev in zip(chain[1:], chain))
