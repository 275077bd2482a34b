"""Language codes of translation models: FLORES-200 (NLLB) and M2M100's `__xx__` tokens, from our ISO codes."""

from __future__ import annotations

from sailor2_jax.data.clean.languages import canonical_language

# FLORES-200 codes of the 15 Sailor2 languages (NLLB-200 covers all of them; Malay is Standard Malay, zsm)
FLORES: dict[str, str] = {
    "en": "eng_Latn", "zh": "zho_Hans", "vi": "vie_Latn", "id": "ind_Latn", "th": "tha_Thai", "ms": "zsm_Latn",
    "my": "mya_Mymr", "tl": "tgl_Latn", "km": "khm_Khmr", "lo": "lao_Laoo", "jv": "jav_Latn", "su": "sun_Latn",
    "ceb": "ceb_Latn", "war": "war_Latn", "ilo": "ilo_Latn",
}


def language_token(vocab: dict[str, int], lang: str) -> str:
    """The model's token for `lang`: its FLORES-200 code (NLLB) or `__lang__` (M2M100); an error names both."""
    lang = canonical_language(lang)
    candidates = [c for c in (FLORES.get(lang), f"__{lang}__") if c]
    for token in candidates:
        if token in vocab:
            return token
    raise ValueError(f"the translation model has no token for language {lang!r} (looked for {', '.join(candidates)})")
