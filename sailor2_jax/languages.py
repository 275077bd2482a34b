"""The 15 Sailor2 languages, in one table: codes, names, scripts, translation-model codes, the spellings users put in
metadata, and which continual-pre-training stage each joins (docs/recipe.md §2.1).

The order of `LANGUAGES` is fixed: batches index into it (`languages` holds positions in this tuple), and per-language
losses are logged in it.
"""

from __future__ import annotations

from typing import Literal

Language = Literal["en", "zh", "vi", "id", "th", "ms", "my", "tl", "km", "lo", "jv", "su", "ceb", "war", "ilo"]
LANGUAGES: tuple[str, ...] = ("en", "zh", "vi", "id", "th", "ms", "my", "tl", "km", "lo", "jv", "su", "ceb", "war",
                              "ilo")
LANGUAGE_INDEX: dict[str, int] = {lang: i for i, lang in enumerate(LANGUAGES)}
# English names, as prompts and reports write them
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "zh": "Chinese", "vi": "Vietnamese", "id": "Indonesian", "th": "Thai", "ms": "Malay",
    "my": "Burmese", "tl": "Tagalog", "km": "Khmer", "lo": "Lao", "jv": "Javanese", "su": "Sundanese",
    "ceb": "Cebuano", "war": "Waray", "ilo": "Ilocano",
}
# ISO 15924 scripts; the five without spaces between words need a segmenter to count words
SCRIPTS: dict[str, str] = {
    "en": "Latn", "zh": "Hans", "vi": "Latn", "id": "Latn", "th": "Thai", "ms": "Latn", "my": "Mymr", "tl": "Latn",
    "km": "Khmr", "lo": "Laoo", "jv": "Latn", "su": "Latn", "ceb": "Latn", "war": "Latn", "ilo": "Latn",
}
NO_SPACES: frozenset[str] = frozenset({"zh", "th", "my", "km", "lo"})
# FLORES-200 codes (NLLB-200 covers all 15; Malay is Standard Malay, zsm)
FLORES: dict[str, str] = {
    "en": "eng_Latn", "zh": "zho_Hans", "vi": "vie_Latn", "id": "ind_Latn", "th": "tha_Thai", "ms": "zsm_Latn",
    "my": "mya_Mymr", "tl": "tgl_Latn", "km": "khm_Khmr", "lo": "lao_Laoo", "jv": "jav_Latn", "su": "sun_Latn",
    "ceb": "ceb_Latn", "war": "war_Latn", "ilo": "ilo_Latn",
}
# stage 1 trains the high-resource languages; the low-resource ones join in stage 2 (docs/recipe.md §2.1)
STAGE1_LANGUAGES: tuple[str, ...] = ("en", "zh", "vi", "id", "th", "ms", "my", "tl", "km")
STAGE2_LANGUAGES: tuple[str, ...] = LANGUAGES

# Codes users put in metadata that mean one of ours (ISO 639-3, macro-language and BCP-47 spellings).
LANGUAGE_ALIASES: dict[str, str] = {
    "eng": "en", "zho": "zh", "cmn": "zh", "zh-hans": "zh", "zh-cn": "zh", "mya": "my", "bur": "my",
    "khm": "km", "lao": "lo", "tha": "th", "vie": "vi", "ind": "id", "in": "id", "msa": "ms", "may": "ms",
    "zlm": "ms", "zsm": "ms", "fil": "tl", "tgl": "tl", "jav": "jv", "jw": "jv", "sun": "su",
}


def canonical_language(code: str | None) -> str | None:
    """A metadata language code as ours ("fil" → "tl", "zsm" → "ms", "th-TH" → "th"); None stays None. Codes that
    are not Sailor2 languages come back lower-cased, for the caller to accept or refuse."""
    if code is None:
        return None
    c = code.strip().lower().replace("_", "-")
    c = LANGUAGE_ALIASES.get(c, c)
    if "-" in c and c not in LANGUAGE_INDEX:  # "th-th", "ms-latn": keep the language subtag
        c = LANGUAGE_ALIASES.get(c.split("-")[0], c.split("-")[0])
    return c or None
