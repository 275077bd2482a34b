"""SailCompass' scoring of generated answers (sail-sg/sailcompass 6093e6c: its evaluators and post-processors), on
the raw model output, 0-100. The strings these rules look for (answer labels such as a language's "Answer: ",
option-parsing patterns) are SailCompass' and are not in this repository: `sailor2-jax eval-import sailcompass`
reads them from a SailCompass checkout into the task file (`SailCompassScoring`), so only the rules live here.

- `pred_postprocess` (its `general_pred_postprocess`): the first line; leading whitespace dropped; the text after the
  first answer label found in it (labels tried in the task file's order: SailCompass iterates a Python set, whose
  order varies between runs, which only matters when a line holds two labels); trailing punctuation after the last
  word character dropped; runs of whitespace made one space; spaces before "," and "." dropped; stripped.
  `ans_postprocess` (`general_ans_postprocess`): the same without the first-line and label steps.
- `em_sc` / `f1_sc` (its `AnsEvaluator`, QA and classification): exact match when {pred, post-processed pred} and
  {answer, post-processed answer} (all lower-cased) share a string; F1 over words of the post-processed pair, the
  words split on whitespace, or by pythainlp's newmm word tokenizer when the raw prediction is Thai by language ID.
  SailCompass identifies with langid.py; this project uses fastText lid.176 (the verifier's), which agrees on
  answers in Thai script and on answers without any (see docs/evaluation.md for where they can disagree).
- `em_tydiqa` / `f1_tydiqa` (its TyDi QA evaluator): the best over the references of exact match and whitespace
  F1 between the post-processed (lower-cased) prediction and reference.
- `bleu_sc` / `chrf++_sc` (its `TextGenEvaluator`, translation and summaries): corpus BLEU with sacrebleu's default
  13a tokenizer (every target language, Thai included) and corpus chrF++ (word order 2) of the post-processed,
  lower-cased predictions against the lower-cased references.
- `option_sc` (its M3Exam and Belebele evaluators): the first line, the text after the last occurrence of the first
  option label found, the first option character found by the ordered option patterns (the first pattern that
  matches; the first option character inside its match); correct when it equals the answer or maps to it through
  `option_map` (Thai digits ↔ Arabic digits, letters → digits, digits → letters).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Sequence

import pydantic

from sailor2_jax.config import Config


class SailCompassScoring(Config):
    """What SailCompass' evaluators look for, imported from its checkout (see the module docstring)."""
    answer_labels: list[str] = pydantic.Field(default_factory=list, description="labels whose text is cut from "
                                              "the prediction's first line (general_pred_postprocess), lower-case")
    options: str = pydantic.Field("", description="option characters to parse, e.g. ABCD")
    option_labels: list[str] = pydantic.Field(default_factory=list, description="the prediction keeps what "
                                              "follows the first of these it contains (before option parsing)")
    option_patterns: list[str] = pydantic.Field(default_factory=list, description="regexes tried in order, "
                                                "`{options}` standing for the option characters")
    option_map: dict[str, str] = pydantic.Field(default_factory=dict, description="a parsed option also counts "
                                                "when it maps to the answer")


# --- post-processing --------------------------------------------------------------------------------------------

def _tidy(text: str) -> str:
    text = re.sub(r"(\w)[^\w\s]*\s*$", r"\1", text)  # trailing punctuation after the last word character
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,", ",", text)
    text = re.sub(r"\s*\.", ".", text)
    return text.strip()


def pred_postprocess(text: str, labels: Sequence[str]) -> str:
    text = text.split("\n", 1)[0].lstrip()
    for label in labels:
        if label in text:
            text = text.split(label)[-1]
            break
    return _tidy(text)


def ans_postprocess(text: str) -> str:
    return _tidy(text.lstrip())


# --- exact match and F1 ---------------------------------------------------------------------------------------

def thai_words(text: str) -> list[str]:
    from pythainlp.tokenize import word_tokenize
    return word_tokenize(text, engine="newmm", join_broken_num=True, keep_whitespace=False)


def _f1(pred_words: Sequence[str], ans_words: Sequence[str]) -> float:
    same = sum((collections.Counter(pred_words) & collections.Counter(ans_words)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_words), same / len(ans_words)
    return 2 * precision * recall / (precision + recall)


def ans_scores(prediction: str, answer: str, scoring: SailCompassScoring, is_thai: Callable[[str], bool]
               ) -> tuple[float, float]:
    """(EM, F1), each 0 or 100 / in [0, 100], of one prediction against one answer (AnsEvaluator)."""
    pred = pred_postprocess(prediction.lower(), scoring.answer_labels)
    ans = ans_postprocess(answer.lower())
    em = 100.0 * bool({prediction.lower(), pred} & {answer.lower(), ans})
    if is_thai(prediction):
        pred_words, ans_words = thai_words(pred), thai_words(ans)
    else:
        pred_words, ans_words = pred.split(), ans.split()
    return em, 100.0 * _f1(pred_words, ans_words)


def tydiqa_scores(prediction: str, references: Sequence[str], scoring: SailCompassScoring) -> tuple[float, float]:
    """(EM, F1) of one prediction, each the best over the references (SailCompass' TyDi QA evaluator)."""
    pred = pred_postprocess(prediction.lower(), scoring.answer_labels)
    refs = [ans_postprocess(r.lower()) for r in references]
    return (100.0 * max(pred == r for r in refs), 100.0 * max(_f1(pred.split(), r.split()) for r in refs))


# --- BLEU and chrF++ --------------------------------------------------------------------------------------------

def textgen_scores(predictions: Sequence[str], references: Sequence[str], scoring: SailCompassScoring
                   ) -> dict[str, float]:
    """Corpus BLEU (13a) and chrF++ of lower-cased, post-processed predictions (TextGenEvaluator)."""
    from sacrebleu.metrics import BLEU, CHRF

    preds = [pred_postprocess(p.lower(), scoring.answer_labels) for p in predictions]
    refs = [[r.lower() for r in references]]
    return {"bleu_sc": BLEU().corpus_score(preds, refs).score,
            "chrf++_sc": CHRF(word_order=2).corpus_score(preds, refs).score}


# --- options ------------------------------------------------------------------------------------------------------

def first_option(text: str, scoring: SailCompassScoring) -> str:
    """The first option character the ordered patterns find in `text`, or ""."""
    options = scoring.options
    for pattern in scoring.option_patterns:
        match = re.search(pattern.replace("{options}", options), text)
        if match:
            found = match.group(0)
            for option in options:
                if option in found:
                    return option
    return ""


def option_score(prediction: str, answer: str, scoring: SailCompassScoring) -> float:
    pred = prediction.split("\n", 1)[0]
    for label in scoring.option_labels:
        if label in pred:
            pred = pred.split(label)[-1]
            break
    parsed = first_option(pred, scoring)
    return 100.0 * (parsed == answer or scoring.option_map.get(parsed) == answer)
