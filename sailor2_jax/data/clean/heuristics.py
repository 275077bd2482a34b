"""sailcraft's heuristic filters (recipe.md §3.2), in sailcraft's order; a document fails at the first one.

Each measure is a plain function of the text so tests can check thresholds one by one. The n-gram counts use the
vectorised hashes of hashing.py instead of Python Counters of substrings.
"""

from __future__ import annotations

import numpy as np

from sailor2_jax.data.clean import hashing
from sailor2_jax.data.clean.params import LanguageParams
from sailor2_jax.data.clean.text import augmented, special_ratio, words
from sailor2_jax.data.clean.wordlists import flagged_for, stopwords_for


def char_repetition_ratio(text: str, n: int) -> float:
    """Share of the character n-grams taken by the k most frequent ones,
    k = min(⌊√distinct⌋, distinct − singletons)."""
    h = hashing.char_ngram_hashes(text, n)
    if not len(h):
        return 0.0
    counts = np.sort(np.unique(h, return_counts=True)[1])[::-1]
    k = min(int(np.sqrt(len(counts))), len(counts) - int((counts == 1).sum()))
    return float(counts[:k].sum() / counts.sum()) if k > 0 else 0.0


def word_repetition_ratio(ws: list[str], n: int) -> float:
    """Share of word n-gram occurrences whose n-gram occurs more than once."""
    if len(ws) < n:
        return 0.0
    h = hashing.token_ngram_hashes(" ".join(ws), n)  # words hold no spaces (split or ICU words)
    counts = np.unique(h, return_counts=True)[1]
    return float(counts[counts > 1].sum() / counts.sum())


def stopword_ratio(ws: list[str], stopwords: frozenset[str], aug: list[str] = ()) -> float:
    """sailcraft: stopwords among the words and their augmentation n-grams, per word, clipped at 1."""
    if not ws:
        return 0.0
    hits = sum(map(stopwords.__contains__, ws)) + sum(map(stopwords.__contains__, aug))
    return min(hits / len(ws), 1.0)


def flagged_ratio(text: str, ws: list[str], flagged: frozenset[str], aug: list[str] = ()) -> float:
    """sailcraft: 1/#words for each flagged word found as a substring of the lowercased text with its spaces (only
    " ") removed, plus the fraction of words and augmentation n-grams that are flagged; clipped at 1."""
    if not ws:
        return 0.0
    nospace = text.replace(" ", "").lower()
    found = sum(f in nospace for f in flagged)
    # a word is a substring of `nospace` (words hold no spaces), so without augmentation no word can be flagged
    # when no flagged word was found: the usual case costs one substring scan per list entry
    if not found and not aug:
        return 0.0
    hits = sum(map(flagged.__contains__, ws)) + sum(map(flagged.__contains__, aug))
    return min((found + hits) / len(ws), 1.0)


def check(text: str, lang: str, params: LanguageParams, ws: list[str] | None = None) -> str | None:
    """Run the filters in sailcraft's order; the reason of the first that fails, or None if all pass. `ws`: the
    text's words, when the caller has them already."""
    ws = words(text, params, lang) if ws is None else ws
    if len(ws) < params.words_min:
        return "too_few_words"
    if len(ws) > params.words_max:
        return "too_many_words"
    if char_repetition_ratio(text, params.char_rep_n) > params.char_rep_max:
        return "character_repetition"
    if word_repetition_ratio(ws, params.word_rep_n) > params.word_rep_max:
        return "word_repetition"
    if special_ratio(text, params.special_characters) > params.special_max:
        return "special_characters"
    aug = augmented(ws, params)
    stopwords = stopwords_for(lang)
    if params.stopwords_check and stopwords is not None and stopword_ratio(ws, stopwords, aug) < params.stopwords_min:
        return "too_few_stopwords"
    if flagged_ratio(text, ws, flagged_for(lang), aug) > params.flagged_max:
        return "flagged_words"
    return None
