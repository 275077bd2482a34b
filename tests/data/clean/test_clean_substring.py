"""Exact-substring dedup (recipe.md §3.4): every copy of a span of ≥ min_bytes bytes occurring twice is cut, nothing
shorter is, across shards exactly as within one; pieces under 20 bytes go; the second pass (heuristics and language
ID on the changed texts) follows.

The suffix-array code is checked against a brute force (every window of every document counted in a dict), alone
and split into shards with the anchor exchange; the pipeline is checked on planted spans in files of three shards."""

import random
import string
from collections import Counter

import numpy as np
import pytest
from datatrove_helpers import write_jsonl

from sailor2_jax.data.clean import suffix
from sailor2_jax.embedded.synthetic import synthetic_document


def brute_force_marks(docs: list[bytes], n: int) -> list[np.ndarray]:
    """Per document, the bytes covered by a window of n bytes that occurs twice among all documents."""
    count = Counter(d[i:i + n] for d in docs for i in range(len(d) - n + 1))
    marks = []
    for d in docs:
        m = np.zeros(len(d), dtype=bool)
        for i in range(len(d) - n + 1):
            if count[d[i:i + n]] >= 2:
                m[i:i + n] = True
        marks.append(m)
    return marks


def marks_of(docs: list[bytes], starts: np.ndarray, ranges: np.ndarray) -> list[np.ndarray]:
    out = []
    for d, s in zip(docs, starts.tolist()):
        m = np.zeros(len(d), dtype=bool)
        for a, b in ranges.tolist():
            lo, hi = max(a, s), min(b, s + len(d))
            if lo < hi:
                m[lo - s:hi - s] = True
        out.append(m)
    return out


def random_corpus(seed: int, n_docs: int = 60, span: int = 30) -> list[bytes]:
    """Short documents over a small alphabet (so that chance repeats of 20+ bytes happen too), with repeated spans
    of span..span+20 bytes and a span of span−1 bytes with different neighbours in each copy."""
    rng = random.Random(seed)
    alphabet = "abcdefgh"
    spans = ["".join(rng.choice(alphabet) for _ in range(span + rng.randint(0, 20))) for _ in range(6)]
    short = "".join(rng.choice(alphabet) for _ in range(span - 1))
    docs = []
    for i in range(n_docs):
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(3, 80))) for _ in range(3)]
        if rng.random() < 0.5:
            parts.insert(1, rng.choice(spans))
        if rng.random() < 0.3:
            parts.insert(2, rng.choice("XYZ") + short + rng.choice("UVW"))
        docs.append("".join(parts).encode())
    return docs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_suffix_array_marks_every_repeated_window(seed):
    docs = random_corpus(seed)
    buf, starts, ends = suffix.build_buffer(docs)
    got = marks_of(docs, starts, suffix.repeated_ranges(buf, starts, ends, 30))
    want = brute_force_marks(docs, 30)
    assert sum(m.sum() for m in want) > 500  # the corpus has repeats to find
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_anchor_exchange_finds_what_one_suffix_array_finds(shards):
    """Each shard's suffix array over its own bytes plus the snippets of its shared anchors from other shards (as
    the exchange stage sends them) marks exactly what the brute force over the whole corpus marks."""
    from sailor2_jax.data.clean.substring import ANCHOR, _to_send

    docs = random_corpus(10 + shards, n_docs=80)
    want = brute_force_marks(docs, 30)
    parts = [list(range(s, len(docs), shards)) for s in range(shards)]
    buffers = [suffix.build_buffer([docs[i] for i in p]) for p in parts]
    rows, owner = [], []
    for s, (buf, starts, ends) in enumerate(buffers):
        a = suffix.anchors(buf, starts, ends, 30, 12)
        rec = np.empty(len(a["hash"]), dtype=ANCHOR)
        for key in ANCHOR.names:
            rec[key] = a[key]
        rows.append(rec)
        owner.append(np.full(len(rec), s, dtype=np.uint64))
    sent = _to_send(np.concatenate(rows), np.concatenate(owner))
    anchors_total = sum(len(r) for r in rows)
    assert anchors_total < 0.2 * sum(map(len, docs))  # about 2 / (w + 1) of the positions
    for s, p in enumerate(parts):
        buf, starts, ends = buffers[s]
        mine = sent[sent["dest"] == s]
        assert not (mine["shard"] == s).any()
        imports = [buffers[int(t)][0][int(a):int(b)].tobytes() for t, a, b in zip(mine["shard"], mine["start"],
                                                                                    mine["end"])]
        ibuf, istarts, iends = suffix.build_buffer(imports)
        full = np.concatenate([buf, ibuf])
        ranges = suffix.repeated_ranges(full, np.concatenate([starts, istarts + len(buf)]),
                                        np.concatenate([ends, iends + len(buf)]), 30, limit=len(buf))
        for g, i in zip(marks_of([docs[i] for i in p], starts, ranges), p):
            np.testing.assert_array_equal(g, want[i])


def test_cut_keeps_whole_characters_and_drops_short_pieces():
    text = "สวัสดีครับ" + "x" * 30 + "ab" + "y" * 30 + "tail piece of text"
    data = text.encode()
    # a range starting inside the last Thai character is widened to it; the 2-byte piece between two cuts goes, as
    # does the 18-byte tail; the Thai head (27 bytes) stays
    head = len("สวัสดีครั".encode()) + 1
    r = np.array([[head, head + 2 + 30], [head + 2 + 30 + 2, len(data) - len("tail piece of text")]])
    assert suffix.cut(text, r, 20) == "สวัสดีครั"
    assert suffix.cut(text, r, 2) == "สวัสดีครั\nab\ntail piece of text"


def _words(rng: random.Random, n_bytes: int) -> str:
    """Made-up lower-case words (2–8 letters) joined by spaces, exactly `n_bytes` long, starting and ending with a
    letter: a span no synthetic document holds by chance, which normalisation leaves alone."""
    out = ""
    while len(out) < n_bytes:
        out += "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 8))) + " "
    out = out[:n_bytes]
    return out[:-1] + "q" if out.endswith(" ") else out


def _planted_corpus(tmp_path):
    """Three files (one per shard): English documents with a 100-byte span in four documents of three shards, a
    99-byte span in three, a 120-byte span twice inside one document, and two pieces a cut leaves short."""
    rng = random.Random(7)
    span, short, twice = _words(rng, 100), _words(rng, 99), _words(rng, 120)
    plants = {2: [span], 7: [span], 11: [span], 14: [span], 3: [short], 8: [short], 12: [short], 5: [twice, twice]}
    records, expected = [], {}
    for i in range(15):
        body = synthetic_document("en", rng, 150)
        lines = body.split("\n")
        text = body
        if i in plants:
            # each copy between letters that differ from copy to copy, inside a line
            line = lines[0]
            cut_at = line.index(" ", len(line) // 2)
            pieces = [line[:cut_at] + " " + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i]]
            for j, p in enumerate(plants[i]):
                pieces.append(p + "abcdefghijklmnopqrstuvwxyz"[(i + j) % 26] + ("?" if j + 1 < len(plants[i]) else ""))
            text = "".join(pieces) + line[cut_at:] + "\n" + "\n".join(lines[1:])
        records.append({"id": f"d{i}", "text": text, "language": "en"})
    for k in range(3):
        write_jsonl(tmp_path / "in" / f"part-{k}.jsonl", records[k * 5:(k + 1) * 5])
    return records, span, short, twice


@pytest.mark.parametrize("tasks", [1, 3])
def test_pipeline_cuts_every_copy_and_nothing_shorter(clean, tmp_path, tasks):
    records, span, short, twice = _planted_corpus(tmp_path)
    summary, kept, rejected = clean([tmp_path / "in"], executor={"tasks": tasks}, lid=False, frequent_lines={
        "enabled": False}, substring_dedup={"enabled": True})
    assert summary["documents"]["balanced"] and len(kept) == 15 and not rejected
    by_id = {r["id"]: r["text"] for r in kept}
    original = {r["id"]: r["text"] for r in records}
    for i in (2, 7, 11, 14):  # every copy, across the three shards
        assert span not in by_id[f"d{i}"]
        head, tail = original[f"d{i}"].split(span)
        assert by_id[f"d{i}"] == head.strip() + "\n" + tail.strip()  # exactly the span, nothing around it
    for i in (3, 8, 12):  # 99 bytes: kept everywhere
        assert by_id[f"d{i}"] == original[f"d{i}"]
    assert twice not in by_id["d5"]
    for i in set(range(15)) - {2, 7, 11, 14, 5}:
        assert by_id[f"d{i}"] == original[f"d{i}"]
    step = summary["steps"]["substring_dedup"]["en"]
    # 4 spans of 100 bytes, each replaced by a line break; in d5 two 120-byte copies and the 2-byte piece between
    assert step["bytes_in"] - step["bytes_out"] == 4 * (100 - 1) + (120 + 2 + 120 - 1)
    assert summary["totals"]["substring_dedup"]["docs_out"] == 15


def test_shards_change_nothing(clean, tmp_path):
    """The same corpus cleaned as one shard and as three gives the same kept texts (the cross-shard exchange is
    exact), and a document left short by the cut is removed by the second heuristic pass."""
    records, span, _, _ = _planted_corpus(tmp_path)
    # a short document that is half the span: it passes the filters, but after the cut it has too few words
    tail = " and it is one of the things that we all have to do for each of them as well"  # 19 words
    records.append({"id": "mostly-span", "text": span + tail, "language": "en"})
    write_jsonl(tmp_path / "in" / "part-2.jsonl", records[10:])
    runs = []
    for tasks in (1, 3):
        summary, kept, rejected = clean([tmp_path / "in"], executor={"tasks": tasks}, lid=False,
                                        substring_dedup={"enabled": True})
        runs.append(sorted((r["id"], r["text"]) for r in kept))
        reasons = {r["id"]: (r["_rejection"]["step"], r["_rejection"]["reason"]) for r in rejected}
        assert reasons["mostly-span"] == ("second_pass", "too_few_words")
    assert runs[0] == runs[1]


def test_second_pass_runs_language_id_on_cut_texts(clean):
    """A document that is Indonesian only through a paragraph it shares with another: the whole passes language ID,
    the cut leaves its English tail, which the second pass rejects with the top two labels recorded."""
    shared = ("Pemerintah daerah akan membangun jembatan baru di atas sungai itu tahun depan supaya warga tidak perlu "
              "memutar jauh untuk sampai ke kota kecamatan. ")
    english = "Click here to read the full story and share it with your friends on social media today."
    records = [
        {"id": "own", "text": shared + "Kegiatan itu diikuti oleh ratusan peserta dari berbagai daerah, termasuk "
                                       "para pelajar dan mahasiswa yang datang sejak pagi."},
        {"id": "mixed", "text": shared + english},
    ]
    summary, kept, rejected = clean(records, language="id")
    assert summary["totals"]["lid"]["docs_out"] == 2  # both pass the first pass
    assert [r["id"] for r in kept] == ["own"]
    (r,) = rejected
    assert (r["id"], r["_rejection"]["step"], r["_rejection"]["reason"]) == ("mixed", "second_pass", "wrong_language")
    assert r["_rejection"]["lid"]["top2"][0][0] == "en"
    assert r["text"] == english  # the text as it entered the step: what was left after the cut


def test_default_stage_order_is_sailcrafts(tmp_path):
    """The default config runs sailcraft's four stages in its order — stage 1 (heuristics, LID) and 2 (MinHash) in
    decide, 3 substring dedup, 4 the second pass after the cut — and the packaged default.yaml is those defaults."""
    from sailor2_jax.data.clean import CleanConfig, load_clean_config
    from sailor2_jax.data.clean.apply import ApplyDecisions, OutputWriter, PerplexityFilter, SecondPass
    from sailor2_jax.data.clean.lines import FrequentLineFilter
    from sailor2_jax.data.clean.pipeline import stages
    from sailor2_jax.data.clean.substring import SubstringCut

    write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    assert load_clean_config("default") == CleanConfig()
    plan = stages([str(tmp_path)], str(tmp_path / "out"), CleanConfig())
    assert [name for name, _, _ in plan] == ["analyse", "decide", "substring-index", "substring-find",
                                             "frequent-lines", "apply", "summarise"]
    apply = dict((name, pipeline) for name, pipeline, _ in plan)["apply"]
    assert [type(s) for s in apply] == [ApplyDecisions, SubstringCut, FrequentLineFilter, SecondPass, OutputWriter]
    # as configured: without substring dedup or the second pass, and with KenLM after the second pass
    plan = stages([str(tmp_path)], str(tmp_path / "out"), load_clean_config(None, [
        "substring_dedup.enabled=false", "second_pass=false"]))
    assert "substring-index" not in [name for name, _, _ in plan]
    assert [type(s) for s in plan[-2][1]] == [ApplyDecisions, FrequentLineFilter, OutputWriter]
    kenlm = tmp_path / "m"
    kenlm.touch()
    plan = stages([str(tmp_path)], str(tmp_path / "out"), load_clean_config(None, [
        "kenlm.enabled=true", f"kenlm.models={{en: {{kenlm: {kenlm}, sentencepiece: {kenlm}}}}}"]))
    assert [type(s) for s in plan[-2][1]] == [ApplyDecisions, SubstringCut, FrequentLineFilter, SecondPass,
                                              PerplexityFilter, OutputWriter]
