"""The demo's stage-2 data step (recipe.md §2.3) on the embedded text: translation of English documents with a tiny
random NLLB-architecture model (CTranslate2), fastText quality classifiers for every language, and the top 15 % of
the cleaned documents per language.

In Sailor2 the classifier's positives are translated high-quality English; a random translator writes noise, so
here the positives are documents of real UDHR sentences and the negatives word salad of the same words (what the
cleaning demo's synthetic web documents are): the classifier has to learn which word sequences are natural. The
selection runs on the cleaned documents with two documents of real sentences per language mixed in; those should be
the ones kept.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from sailor2_jax.data.clean.udhr import synthetic_document, udhr_lines
from sailor2_jax.data.config import LANGUAGES
from sailor2_jax.data.translate.segment import sentences

KEEP = 0.15


def prose(lang: str, rng: random.Random, n_sentences: int = 6) -> str:
    """A document of real sentences: UDHR sentences of `lang` in a random order."""
    pool = [s for line in udhr_lines(lang) for s in sentences(line, lang)]
    return "\n".join(rng.choice(pool) for _ in range(n_sentences))


def _write(path: Path, records: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.readlines()


def run_stage2_demo(out: str | Path, cleaned: str | Path, verbose: bool = True) -> dict:
    """Translate, train a classifier per language, select the top 15 % of `cleaned` (the cleaning demo's kept/)."""
    from sailor2_jax.data.quality import SelectConfig, TrainSettings, run_select, train
    from sailor2_jax.data.translate import TranslateConfig, run_translate
    from sailor2_jax.data.translate.demo import make_tiny_translator

    out = Path(out)
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
    # the cleaned documents (word salad of UDHR words) with a few documents of real sentences among them: the
    # classifier should put those on top
    extra = _write(out / "prose.jsonl", [{"id": f"prose-{lang}-{i}", "text": prose(lang, rng), "language": lang}
                                          for lang in LANGUAGES for i in range(2)])
    selected = run_select([str(cleaned), extra], out / "selected", SelectConfig(
        models=models, keep=KEEP, progress=False, executor={"tasks": 2}))
    kept_ids = [json.loads(line)["id"] for p in sorted((out / "selected" / "kept").rglob("*.jsonl.gz"))
                for line in _lines(p)]
    result = {"translated": {t: v["translated"] for t, v in translated["targets"].items()},
              "translation_engine": translated["engine"], "held_out_auc": held_out,
              "selected": selected["documents"], "kept_prose": sum(i.startswith("prose-") for i in kept_ids),
              "kept_per_language": {
                  lang: c["kept"] for lang, c in selected["languages"].items()},
              "histogram": str(out / "selected" / "quality.png")}
    if verbose:
        print(f"translated into {len(result['translated'])} languages with "
              f"{translated['engine']['engine']} ({translated['segments']} segments): {result['translated']}")
        aucs = sorted(held_out.values())
        print(f"quality classifiers for {len(held_out)} languages, held-out AUC {aucs[0]:.3f}–{aucs[-1]:.3f}")
        d = selected["documents"]
        print(f"selected the top {KEEP:.0%} per language of {cleaned} and {extra} (2 documents of real sentences "
              f"per language): kept {d['kept']} of {d['read']}, {result['kept_prose']} of them real sentences → "
              f"{out / 'selected' / 'kept'}; histogram {result['histogram']}")
    return result
