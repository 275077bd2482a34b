"""Long documents in, translatable segments out, and back: paragraphs (lines) → sentences (ICU's sentence break
iterator for the source language) → chunks of words when a sentence alone exceeds the token budget. Translation
models are trained on sentences; a whole document in one pass gets truncated or hallucinated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import icu

# languages written without spaces between sentences
_NO_SENTENCE_SPACE = {"zh"}


@functools.cache
def _sentence_iterator(lang: str) -> icu.BreakIterator:
    return icu.BreakIterator.createSentenceInstance(icu.Locale(lang))


def sentences(text: str, lang: str) -> list[str]:
    """ICU sentences of one paragraph, stripped, empty ones dropped."""
    bi = _sentence_iterator(lang)
    bi.setText(text)
    u16 = text.encode("utf-16-le", "surrogatepass")  # ICU offsets count UTF-16 units
    cuts = [0, *bi]
    out = (u16[2 * a:2 * b].decode("utf-16-le", "surrogatepass").strip() for a, b in zip(cuts, cuts[1:]))
    return [s for s in out if s]


def split_document(text: str, lang: str, count_tokens: Callable[[list[str]], list[int]],
                   max_tokens: int) -> list[list[str]]:
    """Segments per paragraph (a paragraph is a non-empty line), each within `max_tokens` source tokens where
    whitespace allows: an over-long sentence is cut into equal runs of words. `count_tokens` counts what the model
    reads, special tokens included."""
    paragraphs = [[s for s in sentences(line, lang)] for line in text.split("\n") if line.strip()]
    flat = [s for p in paragraphs for s in p]
    counts = iter(count_tokens(flat)) if flat else iter(())
    out = []
    for p in paragraphs:
        segs = []
        for sentence in p:
            n = next(counts)
            words = sentence.split()
            if n <= max_tokens or len(words) < 2:
                segs.append(sentence)
                continue
            parts = -(-n // max_tokens)
            while True:  # equal runs of words, more of them until each fits (a single word may not)
                step = -(-len(words) // parts)
                chunks = [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
                if step == 1 or max(count_tokens(chunks)) <= max_tokens:
                    break
                parts += 1
            segs += chunks
        out.append(segs)
    return out


def join_document(paragraphs: list[list[str]], lang: str) -> str:
    """Translated segments back into a document: sentences joined by a space (none for Chinese), paragraphs by
    line breaks."""
    sep = "" if lang in _NO_SENTENCE_SPACE else " "
    return "\n".join(sep.join(s.strip() for s in p if s.strip()) for p in paragraphs)
