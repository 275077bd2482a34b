"""Cleaning on datatrove: a corpus in all 15 languages with planted exact, near, URL and substring duplicates,
wrong-language documents, boilerplate lines and broken records, through `sailor2-jax clean --config demo`."""

from __future__ import annotations

import json

from sailor2_jax.demo.fixtures import build_demo_corpus
from sailor2_jax.demo.stage import Context, StageResult

TITLE = "data cleaning on datatrove: URL/exact/near/substring dedup, heuristics, language ID, frequent lines"


def run(ctx: Context) -> StageResult:
    where = ctx.out / "clean"
    planted = build_demo_corpus(where / "input")
    ctx.run_command(["clean", "--input", str(where / "input"), "--output-dir", str(where), "--config", "demo"])
    summary = json.loads((where / "summary.json").read_text())
    removed = {step: t["removed"] for step, t in summary["totals"].items()}
    return StageResult(
        summary={**summary["documents"], "planted": planted, "summary": str(where / "summary.json"),
                 "chart": str(where / "summary.png")},
        checks={"kept + rejected = read": summary["documents"]["balanced"],
                "every document of the corpus read": summary["documents"]["read"] == planted["documents"],
                "every broken record rejected on reading": sum(removed["read"].values()) == planted["bad_lines"],
                "every URL duplicate removed": removed["url_dedup"].get("shorter_duplicate_url", 0)
                == planted["url_duplicates"],
                "every exact duplicate removed": removed["exact_dedup"].get("exact_duplicate", 0)
                == planted["exact_duplicates"],
                "every near duplicate removed": removed["minhash"].get("near_duplicate", 0)
                == planted["near_duplicates"],
                "the planted notice cut": summary["totals"]["substring_dedup"]["bytes_out"]
                < summary["totals"]["substring_dedup"]["bytes_in"]})
