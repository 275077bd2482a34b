"""SailCompass' protocol as our task files: `sailor2-jax eval-import sailcompass --src CHECKOUT --data DATA
--output-dir DIR` reads a SailCompass checkout (sail-sg/sailcompass; its dataset configs are parsed, never run:
eval/sailcompass_source.py) and its data (the `sail/Sailcompass_data` download, laid out as the configs' `path`s
say: `data/m3exam/vietnamese-questions-test.json`, `data/xcopa/th_test.jsonl`, ...) and writes `DIR/sailcompass.yaml`
(a tasks file) and `DIR/data/<task>.jsonl` (the records, prompts rendered).

What SailCompass (OpenCompass 001e77f, no meta template, ZeroRetriever) feeds the model, reproduced here:
- **Prompts**: the template's items (`begin`, then `round`: the instruction line, three fixed examples, the query,
  the answer label) each formatted with OpenCompass' `safe_format` (every `{column}` of the record replaced in
  column order, other braces left alone), joined with "\\n" (an empty item adds nothing; an item after the first
  is preceded by the separator even when the first was empty).
  Generation prompts blank the answer column first, as its `GenInferencer` does.
- **Choice tasks** (its `PPLInferencer`): one whole prompt per label; a record's `context` is the part every label's
  prompt shares (the items before the first that differs, and the separator), its `choices` the rest, so
  `context + choice` is the prompt OpenCompass scores (metric `ppl_sc`: eval/run.py), and lm-eval's `acc` /
  `acc_norm` score the same split. `gold` is the label equal to the answer column (as its evaluators compare them).
- **Loaders** (its `datasets/*.py`): M3Exam th options `options_i` (text after "N."), Thai-digit answers as digits;
  vi answers and option letters written with a Cyrillic "В" repaired to "B", a stray "." after the letter dropped;
  jv answers and option letters upper-cased, the question's trailing ". …" stripped; XCOPA's question as a word and
  as a sentence in the data's language and the label as "0"/"1"; Belebele's answer letter, a fifth "don't know"
  option and the lettered option list; XQuAD's context/question/answer. Their language-specific strings come from
  the checkout.
- **Scoring** (eval/sailcompass_metrics.py): each config's evaluator as a metric, with the labels and option
  patterns read from the checkout; 0-100; every test record scored (nothing moved to a few-shot pool).

Every record of a data file is accounted for: written, or rejected with its file:line and reason (counted).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from sailor2_jax.eval.sailcompass_source import (
    DatasetConfig,
    answer_labels,
    evaluator_labels,
    loader_branches,
    loader_dicts,
    option_patterns,
    read_dataset_configs,
)
from sailor2_jax.files import write_atomic, write_jsonl

# the language of each loader's data (Belebele, XCOPA, XNLI, XQuAD and FLORES: from the file or config name)
LOADER_LANGUAGE = {"IndolemDataset": "id", "IndonliDataset": "id", "IndosumDataset": "id", "TydiqaIdDataset": "id",
                   "ThaisumDataset": "th", "WiseSentiDataset": "th", "M3EXAMTHDataset": "th", "VsmecDataset": "vi",
                   "XlsumViDataset": "vi", "M3EXAMVIDataset": "vi", "M3EXAMJvDataset": "jv"}
CODES = {"tha": "th", "vie": "vi", "ind": "id", "th": "th", "vi": "vi", "id": "id", "en": "en"}
CYRILLIC_VE = "\u0412"  # "В": M3Exam vi writes some B options and answers with it
THAI_DIGITS = {"๑": "1", "๒": "2", "๓": "3", "๔": "4", "๕": "5"}


# --- OpenCompass' prompt rendering ---------------------------------------------------------------------------------

def safe_format(text: str, entry: dict) -> str:
    """OpenCompass' safe_format: `{key}` → str(value) for each key in order; other braces untouched."""
    for key, value in entry.items():
        text = text.replace("{" + str(key) + "}", str(value))
    return text


def template_items(template: dict) -> list:
    """The prompt items of a {begin, round, end} template, in order (OpenCompass' _encode_template)."""
    items = []
    for section in ("begin", "round", "end"):
        if section in template:
            part = template[section]
            items += part if isinstance(part, list) else [part]
    return items


def render_items(items: list, entry: dict) -> list[str | None]:
    """Each item's text after safe_format (None for an item that adds nothing: an empty string or prompt)."""
    out = []
    for item in items:
        text = safe_format(item, entry) if isinstance(item, str) else safe_format(item.get("prompt", ""), entry)
        out.append(text or None)
    return out


def join_items(texts: list[str | None]) -> str:
    """OpenCompass' LMTemplateParser without a meta template: the non-empty items joined with "\\n", and a separator
    before every non-empty item but the very first item of the list (so an empty first item leaves a leading
    "\\n")."""
    prompt, sep = "", ""
    for text in texts:
        if text:
            prompt += sep + text
        sep = "\n"
    return prompt


def render(template: dict, entry: dict) -> str:
    return join_items(render_items(template_items(template), entry))


def split_choices(prompts: list[list[str | None]]) -> tuple[str, list[str]]:
    """(context, choices) with context + choice == each label's joined prompt: the context is the items all labels
    share before the first that differs, joined, plus the separator owed to what follows."""
    n = 0
    while all(n < len(p) for p in prompts) and len({p[n] for p in prompts}) == 1:
        n += 1
    context = join_items(prompts[0][:n])
    choices = []
    for p in prompts:
        whole = join_items(p)
        if not whole.startswith(context):
            raise AssertionError("a label's prompt does not extend the shared context")
        choices.append(whole[len(context):])
    if any(not c for c in choices):
        raise ValueError("a label's prompt adds nothing to the shared context")
    return context, choices


# --- the loaders ---------------------------------------------------------------------------------------------------

@dataclass
class Source:
    """What the loaders and evaluators take from the checkout."""
    root: Path
    answer_labels: list[str]
    option_patterns: list[str]
    xcopa_words: dict      # XCOPA's cause/effect as a word (`trans_question`) and as a question (`full_question`)
    xcopa_questions: dict
    belebele_unknown: dict

    @classmethod
    def read(cls, root: Path) -> Source:
        return cls(root, answer_labels(root), option_patterns(root), loader_dicts(root, "xcopa_sea", "trans_question"),
                   loader_dicts(root, "xcopa_sea", "full_question"), loader_branches(root, "belebele", "mc_answer5"))


def _m3exam_th(r: dict) -> dict:
    r["full_options"] = "\n".join(r["options"])
    answer = r["answer_text"]
    r["answer"] = answer if "0" <= answer <= "9" else THAI_DIGITS[answer]
    for i in range(5):
        r[f"options_{i}"] = r["options"][i][2:].lstrip() if i < len(r["options"]) else "None"
    return r


def _m3exam_vi(r: dict) -> dict:
    if r["answer_text"] == CYRILLIC_VE:
        r["answer_text"] = "B"
    for i in range(5):
        if i < len(r["options"]):
            if r["options"][i][:1] == CYRILLIC_VE:
                r["options"][i] = "B" + r["options"][i][1:]
            option = r["options"][i][2:].lstrip()
            r[f"options_{i}"] = option[1:] if option[:1] == "." else option
        else:
            r[f"options_{i}"] = "None"
    r["full_options"] = "\n".join(r["options"])
    return r


def _m3exam_jv(r: dict) -> dict:
    r["question_text"] = r["question_text"].rstrip(". …")
    r["answer_text"] = r["answer_text"].upper()
    for i, option in enumerate(r["options"]):
        r["options"][i] = option[:1].upper() + option[1:]
        r[f"options_{i}"] = r["options"][i][2:].lstrip()
    r["full_options"] = "\n".join(r["options"])
    return r


def _loader(cfg: DatasetConfig, source: Source, language: str):
    kind = cfg.dataset_type
    if kind == "M3EXAMTHDataset":
        return _m3exam_th
    if kind == "M3EXAMVIDataset":
        return _m3exam_vi
    if kind == "M3EXAMJvDataset":
        return _m3exam_jv
    if kind == "XCOPASDataset":
        def xcopa(r):
            r["trans_question"] = source.xcopa_words[r["question"]][language]
            r["full_question"] = source.xcopa_questions[r["question"]][language]
            r["answer"] = "1" if r["label"] == 1 else "0"
            return r
        return xcopa
    if kind == "BelebeleDataset":
        code = Path(cfg.path).name.split("_")[0]

        def belebele(r):
            r["answer"] = chr(int(r["correct_answer_num"]) + 64)
            if code in source.belebele_unknown:
                r["mc_answer5"] = source.belebele_unknown[code]
            r["options"] = "\n".join(f"{chr(64 + k)}. " + r[f"mc_answer{k}"] for k in range(1, 6))
            return r
        return belebele
    if kind == "XQUADDataset":
        return lambda r: {"context": r["context"], "question": r["question"], "answer": r["answer"]}
    return lambda r: r


def _language(cfg: DatasetConfig, name: str) -> str:
    if cfg.dataset_type in LOADER_LANGUAGE:
        return LOADER_LANGUAGE[cfg.dataset_type]
    if cfg.dataset_type == "Flores200Dataset":  # flores_en_th → en-th
        return "-".join(name.split("_")[1:3])
    stem = Path(cfg.path).stem.replace("-", "_").split("_")
    for token in stem:
        if token in CODES:
            return CODES[token]
    raise ValueError(f"{cfg.file}: cannot tell the language of {cfg.path}")


def read_rows(path: Path) -> list[tuple[int, dict | str]]:
    """(line or item number, record or the reason it is unreadable) of a JSON list or a JSONL file."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path} (the Sailcompass_data download, laid out as the "
                                "configs' paths say)")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return [(i, r) for i, r in enumerate(json.loads(text), 1)]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                rows.append((number, f"not valid JSON ({e.msg})"))
    return rows


# --- tasks ---------------------------------------------------------------------------------------------------------

def task_name(cfg: DatasetConfig) -> str:
    """The config file's name without its hash: m3exam_jv_ppl_4fs13f.py → m3exam_jv_ppl (SailCompass' own abbr
    calls that one m3exam-id-ppl)."""
    stem = cfg.file.stem
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def scoring_task(cfg: DatasetConfig, source: Source, name: str) -> dict:
    """The task entry (tasks-file YAML) for a generation config: its evaluator as metrics."""
    task = {"name": name, "type": "generation", "data": f"{name}.jsonl", "template": "{prompt}",
            "max_new_tokens": cfg.max_out_len or 100, "until": [], "postprocess": "none",
            "skip_special_tokens": True}
    evaluator = cfg.evaluator
    if evaluator == "AnsEvaluator":
        task |= {"metrics": ["em_sc", "f1_sc"], "sailcompass": {"answer_labels": source.answer_labels}}
    elif evaluator == "TydiqaIdEvaluator":
        task |= {"metrics": ["em_tydiqa", "f1_tydiqa"], "sailcompass": {"answer_labels": source.answer_labels}}
    elif evaluator == "TextGenEvaluator":
        task |= {"metrics": ["bleu_sc", "chrf++_sc"], "sailcompass": {"answer_labels": source.answer_labels}}
    elif evaluator in ("M3examEmEvaluator", "M3examThEvaluator", "BelebeleEvaluator"):
        module = "m3exam" if evaluator.startswith("M3exam") else "belebele"
        options = {"M3examThEvaluator": "12345๑๒๓๔๕ABCD"}.get(evaluator, cfg.evaluator_args.get("options", "ABCD"))
        if evaluator == "M3examThEvaluator":  # Thai digits ↔ digits, letters → digits
            mapping = {**THAI_DIGITS, **{v: k for k, v in THAI_DIGITS.items()}, **dict(zip("ABCDE", "12345"))}
        elif evaluator == "BelebeleEvaluator":
            mapping = dict(zip("1234", "ABCD"))
        else:
            mapping = {}
        task |= {"metrics": ["option_sc"], "language_consistency": False,  # a letter has no language
                 "sailcompass": {"options": options, "option_labels": evaluator_labels(source.root, module, evaluator),
                                 "option_patterns": source.option_patterns, "option_map": mapping}}
    else:
        raise ValueError(f"{cfg.file}: evaluator {evaluator} is not one SailCompass' generation configs use")
    return task


def load_entries(cfg: DatasetConfig, source: Source, data_root: Path) -> list[tuple[str, dict | str]]:
    """(file:line, the record as SailCompass' loader leaves it, or why it cannot be read) for a config's data."""
    load = _loader(cfg, source, _language(cfg, task_name(cfg)).split("-")[0])
    path = data_root / Path(cfg.path.removeprefix("./data/").removeprefix("data/"))
    out = []
    for number, row in read_rows(path):
        where = f"{path}:{number}"
        try:
            if isinstance(row, str):
                raise ValueError(row)
            out.append((where, load(dict(row))))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            out.append((where, f"{type(e).__name__}: {e}"[:300]))
    return out


def convert(cfg: DatasetConfig, source: Source, data_root: Path, out: Path) -> tuple[dict, int, list[str]]:
    """(task entry, records written, rejections 'file:line: reason') for one dataset config."""
    name = task_name(cfg)
    language = _language(cfg, name)
    records, rejected = [], []
    for where, entry in load_entries(cfg, source, data_root):
        if isinstance(entry, str):
            rejected.append(f"{where}: {entry}")
            continue
        try:
            number = where.rsplit(":", 1)[1]
            if cfg.labelled:
                labels = [str(x) for x in cfg.template]
                gold = str(entry[cfg.output_column])
                if gold not in labels:
                    raise ValueError(f"answer {gold!r} is none of the labels {labels}")
                prompts = [render_items(template_items(cfg.template[label]), entry) for label in cfg.template]
                context, choices = split_choices(prompts)
                records.append({"context": context, "choices": choices, "gold": labels.index(gold),
                                "labels": labels, "language": language, "id": f"{name}-{number}"})
            else:
                answer = entry[cfg.output_column]
                references = [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]
                prompt = render(cfg.template, {**entry, cfg.output_column: ""})
                records.append({"prompt": prompt, "references": references, "language": language,
                                "id": f"{name}-{number}"})
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            rejected.append(f"{where}: {type(e).__name__}: {e}"[:300])
    write_jsonl(out / "data" / f"{name}.jsonl", records)
    if cfg.labelled:
        task = {"name": name, "type": "multiple_choice", "data": f"{name}.jsonl", "template": "{context}",
                "choice_template": "{choice}"}
    else:
        task = scoring_task(cfg, source, name)
    return task, len(records), rejected


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # every task spelled out in full, no YAML anchors
        return True


def import_sailcompass(src: Path, data: Path, out: Path, only: list[str] | None = None) -> dict:
    """Write DIR/sailcompass.yaml and DIR/data/<task>.jsonl (module docstring); returns {task: counts}. `data` is
    the directory holding m3exam/, xcopa/, ... or the dataset download above it (which keeps them under data/)."""
    if not (data / "m3exam").is_dir() and (data / "data").is_dir():
        data = data / "data"
    config_dir = src / "configs" / "datasets"
    if not config_dir.is_dir() or not (src / "sailor_text_postprocessors.py").is_file():
        raise FileNotFoundError(f"{src}: not a SailCompass checkout (configs/datasets/ and "
                                "sailor_text_postprocessors.py expected)")
    source = Source.read(src)
    configs = [c for f in sorted(config_dir.glob("**/*.py")) for c in read_dataset_configs(f)]
    if only:
        unknown = sorted(set(only) - {task_name(c) for c in configs})
        if unknown:
            raise ValueError(f"no SailCompass config named {', '.join(unknown)} (there are "
                             f"{', '.join(sorted(task_name(c) for c in configs))})")
        configs = [c for c in configs if task_name(c) in only]
    tasks, counts = [], {}
    for cfg in configs:
        task, written, rejected = convert(cfg, source, data, out)
        for line in rejected:
            print(f"{line}; record rejected", file=sys.stderr)
        counts[task["name"]] = {"written": written, "rejected": len(rejected), "abbr": cfg.abbr}
        tasks.append(task)
    header = (f"# SailCompass' protocol, imported by `sailor2-jax eval-import sailcompass` from {src.resolve()} and "
              f"{data.resolve()}.\n# Run: sailor2-jax eval --model HF_DIR --tasks {out / 'sailcompass.yaml'} "
              "--output-dir runs/eval/sailcompass\n")
    body = {"data_dir": str((out / "data").resolve()), "max_length": 4096, "batch_size": 8, "tasks": tasks}
    write_atomic(out / "sailcompass.yaml", header + yaml.dump(body, Dumper=_Dumper, allow_unicode=True,
                                                                sort_keys=False, width=120))
    return counts
