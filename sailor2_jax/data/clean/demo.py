"""A small corpus from the UDHR texts of all 15 languages, with every kind of trouble planted, cleaned in seconds."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from sailor2_jax.data.clean.config import CleanConfig
from sailor2_jax.data.clean.pipeline import run_clean
from sailor2_jax.data.clean.udhr import near_duplicate, synthetic_document
from sailor2_jax.data.config import LANGUAGES

BOILERPLATE = "Subscribe to our newsletter | Privacy policy | All rights reserved"
# a notice of more than 100 bytes that sites paste into their pages: substring dedup cuts every copy
NOTICE = ("This site uses cookies to deliver its services and to analyse traffic. By using this site, you agree to "
          "its use of cookies.")
NOTICE_LANGUAGES = ("en", "id", "vi", "tl", "ceb", "jv")


def build_demo_corpus(folder: Path, docs_per_language: int = 6, seed: int = 0) -> dict[str, int]:
    """Write two JSONL files (one gzipped) under `folder`; returns how many planted items of each kind it holds."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict | str | bytes] = []
    planted = {"exact_duplicates": 0, "near_duplicates": 0, "url_duplicates": 0, "wrong_language": 0,
               "bad_lines": 0, "boilerplate_lines": 0, "repeated_notices": 0}
    for lang in LANGUAGES:
        for k in range(docs_per_language):
            text = synthetic_document(lang, rng, 400)
            if k % 2 == 0:  # boilerplate that frequent-line removal must take out
                text += "\n" + BOILERPLATE
                planted["boilerplate_lines"] += 1
            if k == 3 and lang in NOTICE_LANGUAGES:  # a repeated span that substring dedup must cut
                lines = text.split("\n")
                text = "\n".join([*lines[:1], NOTICE, *lines[1:]])
                planted["repeated_notices"] += 1
            url = f"https://example.{lang}/article/{k}"
            records.append({"id": f"{lang}-{k}", "text": text, "url": url, "language": lang})
            if k == 0:
                records.append({"id": f"{lang}-{k}-copy", "text": text, "language": lang})
                planted["exact_duplicates"] += 1
            if k == 1:
                near = near_duplicate(text, lang, rng, edits=2)
                records.append({"id": f"{lang}-{k}-near", "text": near, "language": lang})
                planted["near_duplicates"] += 1
            if k == 2:  # the same page crawled again, truncated: the longer one must survive
                short = "\n".join(text.split("\n")[:2])
                records.append({"id": f"{lang}-{k}-short", "text": short, "url": url + "/#top", "language": lang})
                planted["url_duplicates"] += 1
        # a document labelled `lang` but written in `other`
        other = LANGUAGES[(LANGUAGES.index(lang) + 5) % len(LANGUAGES)]
        records.append({"id": f"{lang}-wrong", "text": synthetic_document(other, rng, 400), "language": lang})
        planted["wrong_language"] += 1
    bad: list[str | bytes] = [
        '{"id": "broken", "text": "unterminated',  # malformed JSON
        b'{"id": "latin1", "text": "caf\xe9"}',  # invalid UTF-8
        '{"id": "no-text", "url": "https://example.com/x"}',
        '{"id": "number", "text": 42}',
        '{"id": "empty", "text": "   "}',
        '["not", "an", "object"]',
        json.dumps({"id": "huge", "text": "word " * 500_000, "language": "en"}),
    ]
    planted["bad_lines"] = len(bad)
    rng.shuffle(records)
    half = len(records) // 2
    with open(folder / "part-0.jsonl", "wb") as f:
        f.writelines(_line(r) for r in records[:half] + bad[:4])
    with gzip.open(folder / "part-1.jsonl.gz", "wb") as f:
        f.writelines(_line(r) for r in records[half:] + bad[4:])
    planted["documents"] = len(records) + len(bad)
    return planted


def _line(r: dict | str | bytes) -> bytes:
    """A JSONL line: a record as JSON, a planted bad line as it is."""
    if isinstance(r, dict):
        r = json.dumps(r, ensure_ascii=False)
    return (r if isinstance(r, bytes) else r.encode("utf-8")) + b"\n"


def run_demo(out_dir: str | Path, verbose: bool = True) -> dict:
    """Build the demo corpus under `out_dir`/input, clean it into `out_dir`, print a per-step table; returns the
    summary (summary.json's content) with the planted counts under "planted"."""
    out = Path(out_dir)
    planted = build_demo_corpus(out / "input")
    config = CleanConfig(executor={"tasks": 2, "workers": 1}, progress=False, substring_dedup={"enabled": True},
                         frequent_lines={"bucket_docs": 10_000_000, "max_count": 5})
    summary = run_clean([str(out / "input")], out, config)
    summary["planted"] = planted
    if verbose:
        print(f"cleaning demo: {planted['documents']} documents in 15 languages → {out}")
        print(f"{'step':<16}{'docs in':>9}{'docs out':>10}{'MB in':>8}{'MB out':>8}  removed")
        for step, t in summary["totals"].items():
            removed = ", ".join(f"{k} {v}" for k, v in sorted(t["removed"].items())) or "-"
            print(f"{step:<16}{t['docs_in']:>9}{t['docs_out']:>10}{t['bytes_in'] / 1e6:>8.2f}"
                  f"{t['bytes_out'] / 1e6:>8.2f}  {removed}")
        print(summary["message"] + f" ({summary['seconds']:.1f} s); chart: {out / 'summary.png'}")
    return summary
