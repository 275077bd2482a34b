"""Convert the benchmarks' own public releases, downloaded by the user, to the task records of `configs/eval/`
(flores, xcopa, belebele, m3exam, qa: this project's wording of those tasks; SailCompass' exact protocol is
`eval-import sailcompass`, eval/sailcompass.py). Nothing is fetched here or at evaluation time.

    sailor2-jax eval-import flores   --src flores200_dataset/         --output-dir data/sc
    sailor2-jax eval-import xcopa    --src xcopa/data/                --output-dir data/sc
    sailor2-jax eval-import belebele --src belebele/                  --output-dir data/sc
    sailor2-jax eval-import m3exam   --src M3Exam/data/text-question/ --output-dir data/sc
    sailor2-jax eval-import tydiqa   --src tydiqa-goldp-v1.1-dev.json --output-dir data/sc
    sailor2-jax eval-import xquad    --src xquad/                     --output-dir data/sc
    sailor2-jax eval --model HF_DIR --tasks flores --output-dir runs/eval/flores data_dir=data/sc

Sources (their public release formats):
- FLORES-200 (`flores200_dataset/{dev,devtest}/<code>.{dev,devtest}`, one sentence per line, aligned): en↔id, th,
  vi; devtest is scored, dev is the few-shot pool → `flores/<src>-<tgt>.jsonl`, `flores/<src>-<tgt>.dev.jsonl`.
- XCOPA (`data/<lang>/{val,test}.<lang>.jsonl`: premise, choice1, choice2, question cause|effect, label) for id,
  th, vi; test scored, val the few-shot pool → `xcopa/<lang>.jsonl`, `xcopa/<lang>.val.jsonl`.
- Belebele (`<code>.jsonl`: flores_passage, question, mc_answer1-4, correct_answer_num 1-4) for ind_Latn,
  tha_Thai, vie_Latn → `belebele/<lang>.jsonl`.
- M3Exam (`<language>-questions-{dev,test}.json`: question_text, background_description, options "1. …" (th) or
  "A. …" (vi, jv), answer_text) for thai, vietnamese, javanese → `m3exam/<lang>.jsonl`, `m3exam/<lang>.dev.jsonl`.
  As SailCompass' loaders do: vi answers and option letters written with a Cyrillic "В" become "B"; jv's
  lower-case answers and option letters are upper-cased.
- TyDi QA GoldP (v1.1 SQuAD-format JSON, ids `indonesian-…`) and XQuAD (`xquad.<lang>.json`, SQuAD format) for th
  and vi → `qa/{tydiqa_id,xquad_th,xquad_vi}.jsonl`; the first 50 questions (at most) are the few-shot pool
  (`….dev.jsonl`), the rest are scored.

Every source record is accounted for: written, or skipped with its reason (printed, counted).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from sailor2_jax.files import write_jsonl

CYRILLIC_VE = "\u0412"  # "В": M3Exam vi writes some B options and answers with it

FLORES = {"en": "eng_Latn", "id": "ind_Latn", "th": "tha_Thai", "vi": "vie_Latn"}
BELEBELE = {"id": "ind_Latn", "th": "tha_Thai", "vi": "vie_Latn"}
M3EXAM = {"th": "thai", "vi": "vietnamese", "jv": "javanese"}
QA_FEWSHOT = 50
# XCOPA's question words in each language (the tasks' templates print them after the premise)
XCOPA_QUESTION = {"id": {"cause": "Apa penyebabnya?", "effect": "Apa akibatnya?"},
                  "th": {"cause": "สาเหตุคืออะไร?", "effect": "ผลลัพธ์คืออะไร?"},
                  "vi": {"cause": "Nguyên nhân là gì?", "effect": "Kết quả là gì?"}}


def _write(path: Path, rows: list[dict]) -> None:
    write_jsonl(path, rows)
    print(f"{path}: {len(rows)} records")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    return path.read_text(encoding="utf-8").splitlines()


def flores(src: Path, out: Path) -> None:
    for split, suffix in (("devtest", ""), ("dev", ".dev")):
        text = {lang: _lines(src / split / f"{code}.{split}") for lang, code in FLORES.items()}
        for lang in ("id", "th", "vi"):
            if len(text[lang]) != len(text["en"]):
                raise ValueError(f"{src / split}: {FLORES[lang]} has {len(text[lang])} lines, English "
                                 f"{len(text['en'])}")
            for s, t in (("en", lang), (lang, "en")):
                _write(out / "flores" / f"{s}-{t}{suffix}.jsonl",
                       [{"prompt": a, "references": [b], "language": f"{s}-{t}", "id": f"flores-{split}-{i}"}
                        for i, (a, b) in enumerate(zip(text[s], text[t]))])


def _jsonl_rows(path: Path, convert: Callable[[dict, int], dict]) -> list[dict]:
    """`convert(record, line number)` of every line of a JSONL release file; a line that does not convert is named
    (file:line and why) and skipped."""
    rows = []
    for number, line in enumerate(_lines(path), 1):
        try:
            rows.append(convert(json.loads(line), number))
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            print(f"{path}:{number}: {e!r}; skipped", file=sys.stderr)
    return rows


def xcopa(src: Path, out: Path) -> None:
    for lang in XCOPA_QUESTION:
        for split, suffix in (("test", ""), ("val", ".val")):
            rows = _jsonl_rows(src / lang / f"{split}.{lang}.jsonl", lambda r, number: {
                "context": r["premise"], "question": XCOPA_QUESTION[lang][r["question"]],
                "choices": [r["choice1"], r["choice2"]], "gold": int(r["label"]), "language": lang,
                "id": f"xcopa-{lang}-{split}-{r.get('idx', number)}"})
            _write(out / "xcopa" / f"{lang}{suffix}.jsonl", rows)


def belebele(src: Path, out: Path) -> None:
    for lang, code in BELEBELE.items():
        rows = _jsonl_rows(src / f"{code}.jsonl", lambda r, number: {
            "context": r["flores_passage"], "question": r["question"],
            "choices": [r[f"mc_answer{k}"] for k in range(1, 5)], "gold": int(r["correct_answer_num"]) - 1,
            "language": lang, "id": f"belebele-{lang}-{number}"})
        _write(out / "belebele" / f"{lang}.jsonl", rows)


def m3exam(src: Path, out: Path) -> None:
    for lang, name in M3EXAM.items():
        for split, suffix in (("test", ""), ("dev", ".dev")):
            file = src / f"{name}-questions-{split}.json"
            if not file.is_file():
                raise FileNotFoundError(f"not found: {file}")
            rows = []
            for k, q in enumerate(json.loads(file.read_text(encoding="utf-8"))):
                try:
                    background = "\n".join(q.get("background_description") or [])
                    question = (background + "\n" if background else "") + q["question_text"]
                    options, answer = [str(o) for o in q["options"]], str(q["answer_text"]).strip()
                    if lang == "vi":
                        options = [("B" + o[1:]) if o[:1] == CYRILLIC_VE else o for o in options]
                        answer = "B" if answer == CYRILLIC_VE else answer
                    elif lang == "jv":
                        options, answer = [o[:1].upper() + o[1:] for o in options], answer.upper()
                    rows.append({"prompt": question + "\n" + "\n".join(options), "question": question,
                                 "references": [answer], "language": lang, "id": f"m3exam-{lang}-{split}-{k}"})
                except (KeyError, TypeError) as e:
                    print(f"{file}: question {k}: {e!r}; skipped", file=sys.stderr)
            _write(out / "m3exam" / f"{lang}{suffix}.jsonl", rows)


def _squad(file: Path, lang: str, keep=lambda qid: True) -> list[dict]:
    if not file.is_file():
        raise FileNotFoundError(f"not found: {file}")
    rows = []
    for article in json.loads(file.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                if keep(qa["id"]):
                    rows.append({"prompt": qa["question"], "context": para["context"], "question": qa["question"],
                                 "references": [a["text"] for a in qa["answers"]], "language": lang,
                                 "id": qa["id"]})
    return rows


def _qa(rows: list[dict], out: Path, name: str) -> None:
    _write(out / "qa" / f"{name}.dev.jsonl", rows[:QA_FEWSHOT])
    _write(out / "qa" / f"{name}.jsonl", rows[QA_FEWSHOT:])


def tydiqa(src: Path, out: Path) -> None:
    _qa(_squad(src, "id", lambda qid: qid.startswith("indonesian")), out, "tydiqa_id")


def xquad(src: Path, out: Path) -> None:
    for lang in ("th", "vi"):
        _qa(_squad(src / f"xquad.{lang}.json", lang), out, f"xquad_{lang}")


CONVERTERS = {"flores": flores, "xcopa": xcopa, "belebele": belebele, "m3exam": m3exam, "tydiqa": tydiqa,
              "xquad": xquad}
