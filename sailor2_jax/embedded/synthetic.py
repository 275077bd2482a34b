"""Real text in all 15 Sailor2 languages, offline: the UDHR excerpts that `gflanguages` ships (1.4–3 KB each), and
synthetic documents built from their words, for the demo, the tests and the benchmark."""

from __future__ import annotations

import functools
import random

from sailor2_jax.data.clean.text import segment
from sailor2_jax.embedded.udhr import documents

# How a synthetic sentence ends and how words are joined, for scripts that differ from "word word."
_SENTENCE_END = {"zh": "。", "my": "။", "km": "។", "th": " ", "lo": " "}
_NO_SPACE = {"zh", "my", "km", "th", "lo"}
# Thai and Lao web text puts a space between short phrases (2–4 words here), which keeps sailcraft's long-word rule
# (whitespace runs over 30 characters) from deleting it
_PHRASES = {"th", "lo"}


def udhr_lines(lang: str) -> tuple[str, ...]:
    """The distinct UDHR paragraphs of `lang` (the same text as the embedded demo data)."""
    return documents(lang)


@functools.cache
def udhr_words(lang: str) -> tuple[str, ...]:
    """Word tokens of the UDHR lines (ICU words for scripts without spaces), with their repetitions."""
    out: list[str] = []
    for line in udhr_lines(lang):
        if lang in _NO_SPACE:
            out += [w for w in segment(line, lang) if w.strip() and any(c.isalnum() for c in w)]
        else:
            out += [w.strip(".,;:!?()\"'") for w in line.split() if w.strip(".,;:!?()\"'")]
    return tuple(out)


def synthetic_document(lang: str, rng: random.Random, n_words: int) -> str:
    """A document of about `n_words` words (≈ 6 bytes each in Latin script, 8–12 in th/lo/km/my): sentences of UDHR
    words drawn at random (by frequency), so two documents share almost no 5-gram, while the words, script and
    stopwords stay those of the language. Sized in words, so planted edits change the same share of shingles in
    every script."""
    vocab = udhr_words(lang)
    sep = "" if lang in _NO_SPACE else " "
    end = _SENTENCE_END.get(lang, ".")
    lines, size = [], 0
    while size < n_words:
        sentences = []
        for _ in range(rng.randint(2, 4)):
            ws = [rng.choice(vocab) for _ in range(rng.randint(8, 16))]
            if sep:
                ws[0] = ws[0][:1].upper() + ws[0][1:]
            if lang in _PHRASES:
                ws = [w + " " if rng.random() < 1 / 3 else w for w in ws]
            sentences.append(sep.join(ws).strip() + end)
            size += len(ws)
        lines.append(" ".join(s.strip() for s in sentences))
    return "\n".join(lines)


def near_duplicate(text: str, lang: str, rng: random.Random, edits: int = 3) -> str:
    """A near-duplicate: `edits` words replaced or dropped, and two adjacent lines swapped when there are several."""
    lines = text.split("\n")
    if len(lines) > 2:
        i = rng.randrange(len(lines) - 1)
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    vocab = udhr_words(lang)
    for _ in range(edits):
        i = rng.randrange(len(lines))
        if lang in _NO_SPACE:
            pieces = list(segment(lines[i], lang))
            j = rng.randrange(len(pieces))
            pieces[j] = rng.choice(vocab)
            lines[i] = "".join(pieces)
        else:
            ws = lines[i].split(" ")
            j = rng.randrange(len(ws))
            if rng.random() < 0.5 and len(ws) > 1:
                del ws[j]
            else:
                ws[j] = rng.choice(vocab)
            lines[i] = " ".join(ws)
    return "\n".join(lines)
