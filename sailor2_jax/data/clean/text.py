"""Text primitives shared by the cleaning steps: normalisation (sailcraft's document modification), word units, and
the special-character class.

Word units: sailcraft splits on whitespace, or uses BigScience SentencePiece models for th/lo/id/vi/ms. We have no
such models offline, so Latin-script languages split on whitespace and scripts written without spaces (th, lo, km,
my, zh) use ICU's dictionary-based word break iterator (`pyicu-wheels`), which gives real words for all five.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import icu
import regex

from sailor2_jax.data.clean.languages import LanguageParams

# Characters sailcraft counts as "special": punctuation, symbols (emoji are So), digits, whitespace; as Unicode
# classes rather than its hand list, so that Thai, Khmer and Burmese punctuation and digits count too.
SPECIAL_RE = regex.compile(r"[\p{P}\p{S}\p{N}\p{Z}\s]")
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
_MULTI_SPACE = re.compile(r"[ ]{2,}")
_CONTROL = regex.compile(r"[\p{Cc}--[\n]]", flags=regex.V1)

# ICU locales for the segmenter languages; ICU picks the dictionary from the text's script, the locale is a hint.
_ICU_LOCALE = {"th": "th", "lo": "lo", "km": "km", "my": "my", "zh": "zh"}
_HAS_WORD_CHAR = regex.compile(r"[\p{L}\p{N}]")


@functools.lru_cache(maxsize=None)
def _break_iterator(lang: str) -> icu.BreakIterator:
    return icu.BreakIterator.createWordInstance(icu.Locale(_ICU_LOCALE.get(lang, "root")))


def segment(text: str, lang: str) -> list[str]:
    """ICU word segmentation; the pieces (words, spaces, punctuation) concatenate back to `text`."""
    bi = _break_iterator(lang)
    bi.setText(text)
    # ICU returns UTF-16 offsets; index a UTF-16 view so astral characters (emoji) do not shift the cuts.
    u16 = text.encode("utf-16-le")
    cuts = [0, *bi]
    return [u16[2 * a:2 * b].decode("utf-16-le") for a, b in zip(cuts, cuts[1:])]


def words(text: str, params: LanguageParams, lang: str) -> list[str]:
    """The word units the filters count: lowercased, special characters stripped from the ends, empties dropped."""
    if params.word_unit == "segmenter":
        pieces = (p for p in segment(text, lang) if _HAS_WORD_CHAR.search(p))
    else:
        pieces = text.split()
    out = []
    for p in pieces:
        w = p.strip(_SPECIAL_STRIP).lower()
        if w:
            out.append(w)
    return out


def _strip_special(word: str) -> str:
    return word.strip(_SPECIAL_STRIP)


def normalise(text: str, params: LanguageParams, lang: str) -> str:
    """sailcraft's document modification: strip, uniform whitespace, optional punctuation mapping, optional removal
    of URL-like words and of words longer than `long_word_max_chars` (measured without special characters)."""
    text = unicodedata.normalize("NFC", text.translate(_WHITESPACE_TABLE))
    text = _CONTROL.sub("", text)
    if params.replace_unicode_punct:
        text = text.translate(_PUNCT_TABLE)
    if params.remove_url_words or params.remove_long_words:
        text = "\n".join(_modify_line(line, params, lang) for line in text.split("\n"))
    lines = (_MULTI_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _modify_line(line: str, params: LanguageParams, lang: str) -> str:
    def keep(word: str) -> bool:
        if params.remove_url_words and any(m in word.lower() for m in _URL_MARKERS):
            return False
        return not (params.remove_long_words and len(_strip_special(word)) > params.long_word_max_chars)

    if params.word_unit == "segmenter":
        # A whitespace "word" in Thai is a whole phrase; judge the ICU words inside it instead, but URLs are
        # whitespace-delimited in every script.
        kept = []
        for chunk in line.split(" "):
            if params.remove_url_words and any(m in chunk.lower() for m in _URL_MARKERS):
                continue
            kept.append("".join(p for p in segment(chunk, lang) if keep(p)) if params.remove_long_words else chunk)
        return " ".join(kept)
    return " ".join(w for w in line.split(" ") if keep(w))


def special_ratio(text: str) -> float:
    """Fraction of characters that are punctuation, symbols, digits or whitespace."""
    return len(SPECIAL_RE.findall(text)) / len(text) if text else 1.0
