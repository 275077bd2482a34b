"""Generation metrics: chrF/chrF++ and BLEU from sacrebleu (corpus level; sentence level per record), exact match
and token F1 as the SQuAD v1.1 script (and TyDi QA GoldP, which reuses it) computes them: the best over the
references, on answers lower-cased, without punctuation, articles and extra whitespace; `exact`: the post-processed
output equals a reference as a string (for option letters, which SQuAD's normalisation would erase: "A" is an
article). All on a 0-100 scale.

Outputs are post-processed before scoring: cut before the first stop string, then `strip` (surrounding
whitespace), `first_line` (the first non-empty line, stripped) or `none`; `normalize_digits` writes every decimal
digit (Thai ๓, Lao ໓, Khmer ៣, Burmese ၃, ...) as 0-9 in outputs and references; then an `answer_pattern` keeps its
first match. The SailCompass metrics (`*_sc`, `*_tydiqa`: eval/sailcompass_metrics.py) do their own post-processing
of the output.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from collections.abc import Callable, Sequence

from sailor2_jax.eval.config import GenerationTask


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in until) if i >= 0), default=len(text))
    return text[:cut]


def normalize_digits(text: str) -> str:
    return "".join(str(unicodedata.decimal(c)) if unicodedata.category(c) == "Nd" else c for c in text)


def postprocess(task: GenerationTask, text: str) -> str:
    text = cut_at_stop(text, task.until)
    if task.postprocess == "none":
        return text
    if task.postprocess == "first_line":
        text = next((line for line in text.splitlines() if line.strip()), "")
    text = normalize_digits(text.strip()) if task.normalize_digits else text.strip()
    if task.answer_pattern:
        m = re.search(task.answer_pattern, text)
        text = "" if m is None else (m.group(1) if m.groups() else m.group(0)).strip()
    return text


def answer_text(task: GenerationTask, output: str) -> str:
    """The part of an output that is the answer (what the language check reads): SailCompass' post-processed
    prediction (its first line, answer label cut; lower-cased, as it compares, and as lid.176 reads anyway) for tasks
    scored its way, whose raw output runs on past the answer; else the post-processed output."""
    if task.sailcompass is not None:
        from sailor2_jax.eval.sailcompass_metrics import pred_postprocess
        return pred_postprocess(output.lower(), task.sailcompass.answer_labels)
    return output


def reference_texts(task: GenerationTask, references: Sequence[str]) -> list[str]:
    return [normalize_digits(r) for r in references] if task.normalize_digits else list(references)


# --- SQuAD v1.1 ----------------------------------------------------------------------------------------------------

def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    return 100.0 * max(normalize_answer(prediction) == normalize_answer(r) for r in references)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    def f1(ref: str) -> float:
        pred_tokens, ref_tokens = normalize_answer(prediction).split(), normalize_answer(ref).split()
        common = collections.Counter(pred_tokens) & collections.Counter(ref_tokens)
        same = sum(common.values())
        if same == 0:
            return 0.0
        precision, recall = same / len(pred_tokens), same / len(ref_tokens)
        return 2 * precision * recall / (precision + recall)
    return 100.0 * max(f1(r) for r in references)


# --- sacrebleu -----------------------------------------------------------------------------------------------------

def _sacrebleu(name: str, task: GenerationTask, sentence: bool = False, tokenize: str | None = None):
    from sacrebleu.metrics import BLEU, CHRF
    if name == "chrf++":
        return CHRF(word_order=2)
    if name == "chrf":
        return CHRF()
    return BLEU(tokenize=tokenize or task.bleu_tokenize, effective_order=sentence)  # sentence level: as advised


def _streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-record reference lists → sacrebleu's reference streams (None where a record has fewer)."""
    n = max(len(r) for r in references)
    return [[r[k] if k < len(r) else None for r in references] for k in range(n)]


def sentence_scores(task: GenerationTask, output: str, references: Sequence[str],
                    is_thai: Callable[[str], bool] | None = None) -> dict[str, float]:
    """Per-record scores; `is_thai(text)` (language ID) is needed by `f1_sc`."""
    from sailor2_jax.eval import sailcompass_metrics as sc

    out = {}
    for name in task.metrics:
        if name in ("em_sc", "f1_sc"):
            if is_thai is None:
                raise ValueError("em_sc/f1_sc need a language identifier (is_thai)")
            out["em_sc"], out["f1_sc"] = sc.ans_scores(output, references[0], task.sailcompass, is_thai)
        elif name in ("em_tydiqa", "f1_tydiqa"):
            out["em_tydiqa"], out["f1_tydiqa"] = sc.tydiqa_scores(output, references, task.sailcompass)
        elif name == "option_sc":
            out[name] = sc.option_score(output, references[0], task.sailcompass)
        elif name in ("bleu_sc", "chrf++_sc"):
            pred = sc.pred_postprocess(output.lower(), task.sailcompass.answer_labels)
            metric = _sacrebleu(name.removesuffix("_sc"), task, sentence=True, tokenize="13a")
            out[name] = metric.sentence_score(pred, [references[0].lower()]).score
        elif name == "exact_match":
            out[name] = exact_match(output, references)
        elif name == "exact":
            out[name] = 100.0 * (output in references)
        elif name == "f1":
            out[name] = token_f1(output, references)
        else:
            out[name] = _sacrebleu(name, task, sentence=True).sentence_score(output, list(references)).score
    return out


def corpus_scores(task: GenerationTask, outputs: Sequence[str], references: Sequence[Sequence[str]],
                  per_record: Sequence[dict[str, float]]) -> dict[str, float]:
    """sacrebleu metrics over the corpus; per-record metrics (exact match, F1, options) as the records' mean."""
    from sailor2_jax.eval import sailcompass_metrics as sc

    out = {}
    for name in task.metrics:
        if name in ("bleu_sc", "chrf++_sc"):  # SailCompass' evaluator: one reference per record
            out[name] = sc.textgen_scores(outputs, [r[0] for r in references], task.sailcompass)[name]
        elif name in ("exact_match", "exact", "f1", "option_sc", "em_sc", "f1_sc", "em_tydiqa", "f1_tydiqa"):
            out[name] = sum(r[name] for r in per_record) / len(per_record)
        else:
            out[name] = _sacrebleu(name, task).corpus_score(list(outputs), _streams(references)).score
    return out
