"""Regenerate the embedded demo data `data/udhr/<lang>.jsonl` from the UDHR text that `gflanguages` ships.

    python -m sailor2_jax.embedded.udhr [--out data/udhr]

gflanguages keeps, for every language, sample texts taken from its UDHR translation (articles and paragraphs, 1.4–3
KB per language). Each distinct paragraph becomes one document, so a language has a dozen or so documents of a few
sentences: small, but real text in every script the tokenizer must handle.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from sailor2_jax.config import DATA_DIR
from sailor2_jax.languages import LANGUAGES

# gflanguages keys (language_script) of the UDHR translation used for each Sailor2 language
GFLANGUAGES_KEY: dict[str, str] = {
    "en": "en_Latn", "zh": "zh_Hans", "vi": "vi_Latn", "id": "id_Latn", "th": "th_Thai", "ms": "zlm_Latn",
    "my": "my_Mymr", "tl": "fil_Latn", "km": "km_Khmr", "lo": "lo_Laoo", "jv": "jv_Latn", "su": "su_Latn",
    "ceb": "ceb_Latn", "war": "war_Latn", "ilo": "ilo_Latn",
}
# sample-text fields, longest passages first; short headline fields are prefixes of these and add nothing
FIELDS = ("specimen_16", "specimen_21", "specimen_32", "specimen_36", "specimen_48", "tester", "styles")


@functools.cache
def _languages():
    from gflanguages import LoadLanguages

    return LoadLanguages()


@functools.cache
def documents(language: str) -> tuple[str, ...]:
    """Distinct UDHR paragraphs of `language`, in order; a paragraph contained in another one is dropped."""
    sample = _languages()[GFLANGUAGES_KEY[language]].sample_text
    paras = [p for p in dict.fromkeys(p.strip() for f in FIELDS for p in getattr(sample, f).split("\n")) if p]
    return tuple(p for p in paras if not any(p != q and p in q for q in paras))


def write(out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for lang in LANGUAGES:
        docs = documents(lang)
        with open(out / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for i, text in enumerate(docs):
                f.write(json.dumps({"id": f"udhr-{lang}-{i}", "language": lang, "text": text}, ensure_ascii=False))
                f.write("\n")
        counts[lang] = len(docs)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR / "udhr")
    counts = write(parser.parse_args().out)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
