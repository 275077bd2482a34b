"""`sailor2-jax clean` on sailcraft's own sample, stage by stage beside the counts sailcraft's README publishes.

    git clone https://github.com/sail-sg/sailcraft /tmp/sailcraft      # its data is not ours to ship
    .venv/bin/python bench/clean_sailcraft.py --sample /tmp/sailcraft/data/data_input/sample.jsonl \\
        [--lid-model /models/lid.176.bin] [--out runs/clean-sailcraft]

sailcraft's sample is 1,000 Indonesian CC-100 lines; its `run_example.sh` runs clean → near dedup (text-dedup
MinHash) → exact-substring dedup → clean again and prints 987 / 974 / 963 / 949 documents after each, with the full
lid.176.bin and its KenLM model. This script runs our default config (`--language id`, one task) and maps our steps
onto its four stages: [1] after language ID, [2] after MinHash, [3] after substring dedup, [4] after the second pass.

sailcraft makes every piece that survives a substring cut its own document and cleans the pieces again; we keep the
pieces of a document joined in it and check the joined text again. The script measures the other choice too, from the
run's work files: each piece of 20 bytes or more as its own document, put through the heuristics and language ID.

Writes OUT/sailcraft_stages.json (the figures README.md and docs/data.md quote) and prints a table.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from sailor2_jax import files
from sailor2_jax.data.clean import load_clean_config, run_clean
from sailor2_jax.data.clean.heuristics import check
from sailor2_jax.data.clean.langid import LanguageIdentifier

SAILCRAFT = {"1 clean": 987, "2 near dedup": 974, "3 substring dedup": 963, "4 clean again": 949}
OURS = {"1 clean": "lid", "2 near dedup": "minhash", "3 substring dedup": "substring_dedup",
        "4 clean again": "second_pass"}


def pieces_as_documents(out: Path, config) -> dict[str, int]:
    """Stages 3 and 4 counted as sailcraft counts them: every piece of a cut document that has `min_segment_bytes`
    or more its own document, judged alone by the heuristics and language ID (one task's work files)."""
    decisions = np.load(out / "work/decisions/00000.npz")
    cuts = np.load(out / "work/substring/cuts/00000.npz")
    ranges: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for d, a, b in zip(cuts["doc"].tolist(), cuts["start"].tolist(), cuts["end"].tolist()):
        ranges[d].append((a, b))
    lid = LanguageIdentifier(config.lid_model)
    minimum = config.substring_dedup.min_segment_bytes
    stage3 = stage4 = 0
    with gzip.open(out / "work/docs/00000.jsonl.gz", "rt") as f:
        for line in f:
            w = json.loads(line)
            if decisions["step"][w["i"]] != 0:  # removed before substring dedup
                continue
            if w["i"] not in ranges:
                stage3, stage4 = stage3 + 1, stage4 + 1
                continue
            data, at, pieces = w["text"].encode("utf-8"), 0, []
            for a, b in sorted(ranges[w["i"]]):
                pieces.append(data[at:a])
                at = max(at, b)
            pieces.append(data[at:])
            lang, params = w["lang"], config.params(w["lang"])
            for piece in (p.decode("utf-8", "ignore").strip() for p in pieces if len(p) >= minimum):
                stage3 += 1
                stage4 += check(piece, lang, params) is None and \
                    lid.check(piece, lang, params.lid_min).reason is None
    return {"3 substring dedup": stage3, "4 clean again": stage4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", required=True, help="sailcraft's data/data_input/sample.jsonl")
    ap.add_argument("--lid-model", help="a fastText LID model (default: the shipped lid.176.ftz)")
    ap.add_argument("--out", default="runs/clean-sailcraft")
    args = ap.parse_args()
    out = Path(args.out)
    overrides = ["language=id", "progress=false", "compression=gzip"]
    if args.lid_model:
        overrides.append(f"lid_model={args.lid_model}")
    config = load_clean_config(None, overrides)
    summary = run_clean([args.sample], out / "run", config)
    totals = summary["totals"]
    ours = {stage: totals[step]["docs_out"] for stage, step in OURS.items()}
    pieces = pieces_as_documents(out / "run", config)
    report = {
        "sample": str(args.sample), "lid_model": str(config.lid_model or "lid.176.ftz (shipped)"),
        "stages": {stage: {"sailcraft": SAILCRAFT[stage], "ours": ours[stage],
                           "ours_pieces_as_documents": pieces.get(stage, ours[stage])} for stage in SAILCRAFT},
        "removed": {step: t["removed"] for step, t in totals.items() if t["removed"]},
    }
    files.write_json(out / "sailcraft_stages.json", report)
    print(f"{'stage':<20}{'sailcraft':>10}{'ours':>8}{'ours, pieces as documents':>28}")
    for stage, row in report["stages"].items():
        print(f"{stage:<20}{row['sailcraft']:>10}{row['ours']:>8}{row['ours_pieces_as_documents']:>28}")
    for step, removed in report["removed"].items():
        print(f"  {step}: " + ", ".join(f"{k} {v}" for k, v in sorted(removed.items())))
    print(f"→ {out / 'sailcraft_stages.json'}")


if __name__ == "__main__":
    main()
