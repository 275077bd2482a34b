"""Text primitives shared by the cleaning steps: normalisation (sailcraft's document modification), word units, and
the special-character class.

Word units: sailcraft splits on whitespace, or uses BigScience SentencePiece models for th/lo/id/vi/ms. We have no
such models offline, so Latin-script languages split on whitespace and scripts written without spaces (th, lo, km,
my, zh) use ICU's dictionary-based word break iterator (`pyicu-wheels`), which gives real words for all five.
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata

import icu
import numpy as np
import regex

from sailor2_jax.data.clean.languages import LanguageParams

_SPECIAL_STRIP = "".join(chr(c) for c in range(0x2000, 0x2070)) + r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~0123456789 """

# Exotic spaces → " " (sailcraft's uniform whitespace). Zero-width space U+200B is kept: Khmer, Burmese and Thai
# texts use it as an invisible word separator and ICU relies on it.
_WHITESPACE = {c: " " for c in "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                              "\u202f\u205f\u3000\t\f\v"}
_WHITESPACE.update({"\r": "", "\ufeff": "", "\ufffc": ""})
_WHITESPACE_TABLE = str.maketrans(_WHITESPACE)
# Full-width and typographic punctuation → ASCII (the CCNet/sailcraft idea; this table is ours).
_PUNCT_TABLE = str.maketrans({
    "，": ",", "。": ". ", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "「": '"', "」": '"',
    "《": '"', "》": '"', "´": "'", "’": "'", "‘": "'", "∶": ":", "：": ":", "？": "?", "！": "!", "（": "(",
    "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "…": "...", "━": "-", "〈": "<", "〉": ">",
    "【": "[", "】": "]", "％": "%", "►": "-",
})
_URL_MARKERS = ("http", "www", ".com", "href", "//")
_URL_WORD = re.compile(rf"\S*(?:{'|'.join(map(re.escape, _URL_MARKERS))})\S*", re.IGNORECASE)
_strip_special = operator.methodcaller("strip", _SPECIAL_STRIP)
_MULTI_SPACE = re.compile(r"[ ]{2,}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # control characters (Cc) but the newline

# ICU locales for the segmenter languages; ICU picks the dictionary from the text's script, the locale is a hint.
_ICU_LOCALE = {"th": "th", "lo": "lo", "km": "km", "my": "my", "zh": "zh"}
_HAS_WORD_CHAR = regex.compile(r"[\p{L}\p{N}]")


@functools.cache
def _break_iterator(lang: str) -> icu.BreakIterator:
    return icu.BreakIterator.createWordInstance(icu.Locale(_ICU_LOCALE.get(lang, "root")))


@functools.lru_cache(maxsize=8)
def segment(text: str, lang: str) -> tuple[str, ...]:
    """ICU word segmentation; the pieces (words, spaces, punctuation) concatenate back to `text`. Cached: the
    heuristics and MinHash segment the same normalised text."""
    bi = _break_iterator(lang)
    bi.setText(text)
    cuts = [0, *bi]
    if cuts[-1] == len(text):  # no astral characters: UTF-16 offsets are str offsets
        return tuple(text[a:b] for a, b in zip(cuts, cuts[1:]))
    u16 = text.encode("utf-16-le", "surrogatepass")  # ICU counts UTF-16 units; emoji take two
    return tuple(u16[2 * a:2 * b].decode("utf-16-le", "surrogatepass") for a, b in zip(cuts, cuts[1:]))


def words(text: str, params: LanguageParams, lang: str) -> list[str]:
    """The word units the filters count: lowercased, special characters stripped from the ends, empties dropped."""
    text = text.lower()
    if params.word_unit == "segmenter":
        pieces = [p for p in segment(text, lang) if _HAS_WORD_CHAR.search(p)]
    else:
        pieces = text.split()
    # most words are purely alphabetic and need no strip: testing first is 3× faster than stripping them all
    ws = [w if w.isalpha() else w.strip(_SPECIAL_STRIP) for w in pieces]
    return [w for w in ws if w] if "" in ws else ws


def normalise(text: str, params: LanguageParams, lang: str) -> str:
    """sailcraft's document modification: strip, uniform whitespace, optional punctuation mapping, optional removal
    of URL-like words and of words longer than `long_word_max_chars` (measured without special characters)."""
    text = unicodedata.normalize("NFC", text.translate(_WHITESPACE_TABLE))
    text = _CONTROL.sub("", text)
    if params.replace_unicode_punct:
        text = normalise_punctuation(text)
    text = _remove_words(text, params, lang)
    lines = (line.strip() for line in _MULTI_SPACE.sub(" ", text).split("\n"))
    return "\n".join(line for line in lines if line)


def normalise_punctuation(text: str) -> str:
    return text.translate(_PUNCT_TABLE)


def _remove_words(text: str, params: LanguageParams, lang: str) -> str:
    """Remove URL-like and over-long words from the whole text at once (`\\S` never crosses a line); cheap checks
    first, so only texts that have such words pay for the regex passes."""
    if params.remove_url_words:  # URLs are whitespace-delimited in every script
        low = text.lower()
        if any(m in low for m in _URL_MARKERS):
            text = _URL_WORD.sub("", text)
    if not params.remove_long_words:
        return text
    limit = params.long_word_max_chars
    if params.word_unit == "segmenter":
        # a whitespace "word" in Thai is a whole phrase: judge the ICU words instead, segmenting the text once
        # (spaces are always word boundaries, so this equals segmenting each phrase)
        if not any(len(_strip_special(p)) > limit for p in segment(text, lang) if len(p) > limit):
            return text
        return "".join(p for p in segment(text, lang) if len(_strip_special(p)) <= limit)

    if max(map(len, text.split()), default=0) <= limit:  # the usual case, 3× cheaper than the regex scan
        return text

    def cut(m: re.Match) -> str:
        return "" if len(_strip_special(m.group())) > limit else m.group()

    return _long_run(limit).sub(cut, text)


@functools.cache
def _long_run(limit: int) -> re.Pattern:
    """Whitespace-free runs longer than `limit`: the only candidates for removal (stripping only shortens)."""
    return re.compile(rf"\S{{{limit + 1},}}")


_SPECIAL_TABLE_SIZE = 0x30000


@functools.lru_cache(maxsize=1)
def _special_table() -> np.ndarray:
    """Characters sailcraft counts as "special": punctuation, symbols (emoji are So), digits, whitespace. Unicode
    classes rather than its hand list, so that Thai, Khmer and Burmese punctuation and digits count too. A lookup
    table over all code points (built once per process in ~0.1 s) makes the count one numpy gather."""
    n = _SPECIAL_TABLE_SIZE
    return np.fromiter((unicodedata.category(chr(c))[0] in "PSNZ" or chr(c).isspace() for c in range(n)),
                       dtype=bool, count=n)


def special_ratio(text: str) -> float:
    """Fraction of characters that are punctuation, symbols, digits or whitespace."""
    if not text:
        return 1.0
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    # past U+2FFFF are only rare ideographs, tags and private use: not special (the table's last entry is False)
    special = _special_table()[np.minimum(cps, _SPECIAL_TABLE_SIZE - 1)]
    return int(np.count_nonzero(special)) / len(cps)
