"""Stage-2 data (the recipe's annealing data) on the embedded text: English translated by a tiny random
NLLB-architecture model through CTranslate2, a fastText quality classifier per language, and the top 15 % per
language of the cleaned documents.

In Sailor2 the classifier's positives are translated high-quality English; a random translator writes noise, so
here the positives are documents of real UDHR sentences and the negatives word salad of the same words (what the
cleaning stage's synthetic web documents are): the classifier has to learn which word sequences are natural. The
selection runs on the cleaned documents with two documents of real sentences per language mixed in: those should be
the ones kept.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from sailor2_jax.languages import LANGUAGES
from sailor2_jax.demo.fixtures import make_tiny_translator, prose
from sailor2_jax.demo.stage import Context, StageResult
from sailor2_jax.embedded.synthetic import synthetic_document
from sailor2_jax.files import write_jsonl

TITLE = "stage-2 data: translation (tiny NLLB-style model, CTranslate2), fastText quality, top 15 % kept"
KEEP = 0.15


def run(ctx: Context) -> StageResult:
    from sailor2_jax.data.quality import SelectConfig, TrainSettings, run_select, train
    from sailor2_jax.data.translate import TranslateConfig, run_translate

    out, cleaned = ctx.out / "stage2_data", ctx.out / "clean" / "kept"
    rng = random.Random(0)
    english = _write(out / "english.jsonl", [{"id": f"en-{i}", "text": prose("en", rng, 3)} for i in range(8)])
    model = make_tiny_translator(out / "translator")
    translated = run_translate([english], out / "translated", TranslateConfig(
        model=model, targets=["th", "vi"], engine="ctranslate2", beam_size=2, max_output_tokens=32, progress=False))
    models, held_out = [], {}
    for lang in LANGUAGES:
        pos = _write(out / "train" / f"{lang}-positive.jsonl", [{"text": prose(lang, rng)} for _ in range(150)])
        neg = _write(out / "train" / f"{lang}-negative.jsonl",
                     [{"text": synthetic_document(lang, rng, 60)} for _ in range(150)])
        path = out / "models" / f"{lang}.bin"
        # few examples: the top of the recipe's ranges (lr 0.5, 25 epochs) and a small model
        info = train([pos], [neg], lang, path, TrainSettings(dim=32, epoch=25, lr=0.5, bucket=50_000, held_out=0.2))
        models.append(path)
        held_out[lang] = round(info["held_out_metrics"]["auc"], 3)
    extra = _write(out / "prose.jsonl", [{"id": f"prose-{lang}-{i}", "text": prose(lang, rng), "language": lang}
                                          for lang in LANGUAGES for i in range(2)])
    selected = run_select([str(cleaned), extra], out / "selected", SelectConfig(
        models=models, keep=KEEP, progress=False, executor={"tasks": 2}))
    kept_ids = [json.loads(line)["id"] for p in sorted((out / "selected" / "kept").rglob("*.jsonl.gz"))
                for line in gzip.open(p, "rt", encoding="utf-8")]
    kept_prose = sum(i.startswith("prose-") for i in kept_ids)
    documents = selected["documents"]
    counts = {t: v["translated"] for t, v in translated["targets"].items()}
    aucs = sorted(held_out.values())
    ctx.console.print(
        f"translated into {len(counts)} languages with {translated['engine']['engine']} ({translated['segments']} "
        f"segments): {counts}\nquality classifiers for {len(held_out)} languages, held-out AUC "
        f"{aucs[0]:.3f}–{aucs[-1]:.3f}\nselected the top {KEEP:.0%} per language of {cleaned} and {extra}: kept "
        f"{documents['kept']} of {documents['read']}, {kept_prose} of them real sentences → {out / 'selected' / 'kept'}"
        f"; histogram {out / 'selected' / 'quality.png'}")
    return StageResult(
        summary={"translated": counts, "translation_engine": translated["engine"], "held_out_auc": held_out,
                 "selected": documents, "kept_prose": kept_prose,
                 "kept_per_language": {lang: c["kept"] for lang, c in selected["languages"].items()},
                 "histogram": str(out / "selected" / "quality.png")},
        checks={"every English document translated into th and vi": all(counts[t] == 8 for t in ("th", "vi")),
                "every language's classifier separates held-out text (AUC ≥ 0.9)": aucs[0] >= 0.9,
                "kept + rejected = read in the selection": documents["balanced"],
                "most kept documents are the real sentences": kept_prose >= 0.8 * documents["kept"] > 0})


def _write(path: Path, records: list[dict]) -> str:
    write_jsonl(path, records)
    return str(path)
