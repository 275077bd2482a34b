"""Text primitives shared by the cleaning steps: normalisation (sailcraft's document modification), word units, and
the special-character class.

Word units: sailcraft splits on whitespace, or uses BigScience SentencePiece models for th/lo/id/vi/ms. We have no
such models offline, so Latin-script languages split on whitespace and scripts written without spaces (th, lo, km,
my, zh) use ICU's dictionary-based word break iterator (`pyicu-wheels`), which gives real words for all five.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata

import icu
import numpy as np
import regex

from sailor2_jax.data.clean.params import LanguageParams

# sailcraft's special characters (BigScience's list): ASCII punctuation, digits and whitespace, a fixed list of
# other characters (typographic punctuation, symbols, some CJK/kana and Indic signs, Thai digit one), and emoji.
# The same set is stripped from the ends of words.
_SAILCRAFT_LIST = (
    string.punctuation + string.digits + string.whitespace +
    "\u0092\u2009\u0093\u0097\u200a\u009d\u0099\u202f\u0096\u2005\u0095\u0091\u009c\u3000\u2002\u00a0"
    "\u2008\u0098\u0081\u2003\u0082\ufffc\u0083\u0084’“”–ー一▬…✦�\u00ad£\u200b•€«»°·═×士＾˘⇓↓↑←→（）§″′´¿−±∈"
    "\ufeff¢ø‚„½¼¾¹²³―⁃，ˌ¸‹›ʺˈʻ¦‐\u2800‰\u0085‑≤≥‖◆●■►▼▲▴∆▻¡★☆✱ːº。¯˜¥ɪ≈†上ン：∼⁄・♡✓⊕․．⋅÷１‟；،、¨\u093e"
    "\u09be\u0940\u094d\u0947◦˚゜ʼ≖¤ッツシ℃√！【】‿∞➤～πه۩☛₨➩☻๑٪♥ı\u097d《‘©﴿٬？▷Г♫∟™ª₪®「—❖」﴾》"
)
# Emoji: sailcraft adds the keys of the `emoji` package; the single code points among them are ICU's Emoji property
# without the regional indicators (which the package only lists in pairs, as flags); the two differ by the newest
# emoji only. Multi-code-point emoji cannot match a single character, so they add nothing.
_EMOJI = "".join(icu.UnicodeSet("[[:Emoji:]-[:Regional_Indicator:]]"))
SAILCRAFT_SPECIAL = frozenset(_SAILCRAFT_LIST + _EMOJI)
# The `unicode` alternative (special_characters: unicode): punctuation, symbols, digits and spaces by Unicode class,
# so that Thai, Khmer and Burmese punctuation and digits count too; words are stripped of ASCII punctuation, digits
# and the general-punctuation block.
_UNICODE_STRIP = "".join(chr(c) for c in range(0x2000, 0x2070)) + string.punctuation + string.digits + " "
_STRIP_SET = {"sailcraft": SAILCRAFT_SPECIAL, "unicode": frozenset(_UNICODE_STRIP)}

# Exotic spaces → " " (sailcraft's uniform whitespace). Zero-width space U+200B is kept: Khmer, Burmese and Thai
# texts use it as an invisible word separator and ICU relies on it.
_WHITESPACE = {c: " " for c in "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                              "\u202f\u205f\u3000\t\f\v"}
_WHITESPACE.update({"\r": "", "\ufeff": "", "\ufffc": ""})
_WHITESPACE_TABLE = str.maketrans(_WHITESPACE)
# sailcraft's unicode punctuation table (CCNet's, quirks included: "１" becomes '"', "‘" is left alone)
_SAILCRAFT_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"', "」": '"', "「": '"',
    "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!", "（": "(", "）": ")", "；": ";",
    "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[",
    "】": "]", "％": "%", "►": "-",
}
# `punctuation_table: extended`: the same, with "‘" → "'" like its partner "’", "。" → ". " (a sentence break, as
# "．"), and full-width digits left as digits
_EXTENDED_PUNCT = {**{k: v for k, v in _SAILCRAFT_PUNCT.items() if k != "１"}, "‘": "'", "。": ". "}
_PUNCT_TABLES = {"sailcraft": str.maketrans(_SAILCRAFT_PUNCT), "extended": str.maketrans(_EXTENDED_PUNCT)}
_URL_MARKERS = ("http", "www", ".com", "href", "//")
_URL_WORD = re.compile(rf"\S*(?:{'|'.join(map(re.escape, _URL_MARKERS))})\S*")  # candidates
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


def strip_special(word: str, special: frozenset[str]) -> str:
    """`word` without the characters of `special` at either end (sailcraft's strip, as a set lookup per character:
    `str.strip` with a 1,700-character argument scans it for every character)."""
    i, j = 0, len(word)
    while i < j and word[i] in special:
        i += 1
    while j > i and word[j - 1] in special:
        j -= 1
    return word[i:j]


def words(text: str, params: LanguageParams, lang: str) -> list[str]:
    """The word units the filters count: lowercased, special characters stripped from the ends, empties dropped."""
    text = text.lower()
    if params.word_unit == "segmenter":
        pieces = [p for p in segment(text, lang) if _HAS_WORD_CHAR.search(p)]
    else:
        pieces = text.split()
    special = _STRIP_SET[params.special_characters]
    # most words start and end with a letter: two set lookups instead of a strip
    ws = [w if w[0] not in special and w[-1] not in special else strip_special(w, special) for w in pieces]
    return [w for w in ws if w] if "" in ws else ws


def augmented(ws: list[str], params: LanguageParams) -> list[str]:
    """sailcraft's word augmentation (zh, vi): the n-grams of adjacent words, joined by `augment_join` ("" for
    Chinese compounds, " " for Vietnamese multi-syllable words), counted with the words by the stopword and
    flagged-word filters."""
    n = params.augment_ngram
    if n < 2 or len(ws) < n:
        return []
    join = params.augment_join
    return [join.join(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def normalise(text: str, params: LanguageParams, lang: str) -> str:
    """sailcraft's document modification: strip, uniform whitespace, optional punctuation mapping, optional removal
    of URL-like words and of words longer than `long_word_max_chars` (measured without special characters)."""
    text = unicodedata.normalize("NFC", text.translate(_WHITESPACE_TABLE))
    text = _CONTROL.sub("", text)
    if params.replace_unicode_punct:
        text = normalise_punctuation(text, params.punctuation_table)
    text = _remove_words(text, params, lang)
    lines = (line.strip() for line in _MULTI_SPACE.sub(" ", text).split("\n"))
    return "\n".join(line for line in lines if line)


def normalise_punctuation(text: str, table: str = "sailcraft") -> str:
    return text.translate(_PUNCT_TABLES[table])


def _remove_words(text: str, params: LanguageParams, lang: str) -> str:
    """Remove URL-like and over-long words from the whole text at once (`\\S` never crosses a line); cheap checks
    first, so only texts that have such words pay for the regex passes.

    As sailcraft: a whitespace-delimited word goes when, stripped of special characters, it contains one of
    `_URL_MARKERS` (case-sensitive: "HTTP://X" stays); and when it is longer than the limit and, stripped, still
    longer or empty. `long_word_unit: segmenter` judges ICU words instead of whitespace runs (see languages.py)."""
    special = _STRIP_SET[params.special_characters]
    if params.remove_url_words and any(m in text for m in _URL_MARKERS):
        def url_cut(m: re.Match) -> str:
            stripped = strip_special(m.group(), special)
            return "" if any(u in stripped for u in _URL_MARKERS) else m.group()

        text = _URL_WORD.sub(url_cut, text)
    if not params.remove_long_words:
        return text
    limit = params.long_word_max_chars

    def too_long(word: str) -> bool:
        if len(word) <= limit:
            return False
        stripped = strip_special(word, special)
        return not stripped or len(stripped) > limit

    if params.long_word_unit == "segmenter":
        # ICU words (spaces are always word boundaries, so this equals segmenting each whitespace run)
        pieces = segment(text, lang)
        if not any(too_long(p) for p in pieces if len(p) > limit):
            return text
        return "".join(p for p in pieces if not too_long(p))
    if max(map(len, text.split()), default=0) <= limit:  # the usual case, 3× cheaper than the regex scan
        return text
    return _long_run(limit).sub(lambda m: "" if too_long(m.group()) else m.group(), text)


@functools.cache
def _long_run(limit: int) -> re.Pattern:
    """Whitespace-free runs longer than `limit`: the only candidates for removal (stripping only shortens)."""
    return re.compile(rf"\S{{{limit + 1},}}")


_SPECIAL_TABLE_SIZE = 0x30000


@functools.cache
def _special_table(kind: str) -> np.ndarray:
    """A lookup table over all code points up to U+2FFFF (built once per process in ~0.1 s) makes the count one
    numpy gather; beyond it are only rare ideographs, tags and private use (the last entry stays False)."""
    n = _SPECIAL_TABLE_SIZE
    table = np.zeros(n, dtype=bool)
    if kind == "sailcraft":
        table[[ord(c) for c in SAILCRAFT_SPECIAL if ord(c) < n - 1]] = True
    else:
        table[:-1] = np.fromiter((unicodedata.category(chr(c))[0] in "PSNZ" or chr(c).isspace() for c in range(n - 1)),
                                 dtype=bool, count=n - 1)
    return table


def special_ratio(text: str, kind: str = "sailcraft") -> float:
    """Fraction of characters that are special: sailcraft's set (`kind="sailcraft"`) or punctuation, symbols,
    digits and whitespace by Unicode class (`kind="unicode"`). An empty text has none, as in sailcraft."""
    if not text:
        return 0.0
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    special = _special_table(kind)[np.minimum(cps, _SPECIAL_TABLE_SIZE - 1)]
    return int(np.count_nonzero(special)) / len(cps)
