"""The judge task's prompts: one JSON object a line,

    {"id": "...", "language": "th", "messages": [{"role": "user", "content": "..."}] | "prompt": "...",
     "checklist": ["...", ...], "reference": "an answer to compare against (optional)", "tag": "..." (optional)}

read line by line (a bad line is named with its file:line and skipped, counted: read = kept + rejected), and the
converter of Sea-WildBench's public release (WildBench v2's fields plus `language`: `session_id`,
`conversation_input` [{role, content, ...}], `checklist`, `references` {model: answer}, `primary_tag`, `language`
as ISO 639-3 or 639-1; JSONL, a JSON list, or Parquet) to that format.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from sailor2_jax.languages import canonical_language
from sailor2_jax.files import write_jsonl

# Sea-WildBench's language codes (ISO 639-3) → ours
SEA_WB_LANGUAGES = {"tha": "th", "vie": "vi", "ind": "id", "tgl": "tl", "fil": "tl", "zsm": "ms", "msa": "ms",
                    "khm": "km", "lao": "lo", "mya": "my", "eng": "en", "zho": "zh", "jav": "jv", "sun": "su",
                    "ceb": "ceb", "war": "war", "ilo": "ilo"}


@dataclass
class JudgePrompt:
    id: str
    language: str
    messages: list[dict[str, str]]
    checklist: list[str]
    reference: str | None
    tag: str | None
    where: str


def _check(record, where: str) -> JudgePrompt:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                           for m in messages)):
            raise ValueError("`messages` must be a non-empty list of {role, content} strings")
        if messages[-1]["role"] != "user":
            raise ValueError("`messages` must end with the user turn to answer")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif isinstance(record.get("prompt"), str) and record["prompt"].strip():
        messages = [{"role": "user", "content": record["prompt"]}]
    else:
        raise ValueError("needs `messages` or a non-empty `prompt`")
    language = record.get("language")
    if not isinstance(language, str) or not language.strip():
        raise ValueError("`language` (the language answers must be in) is required")
    checklist = record.get("checklist", [])
    if not isinstance(checklist, list) or not all(isinstance(c, str) for c in checklist):
        raise ValueError("`checklist` must be a list of strings")
    reference = record.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise ValueError("`reference` must be a string")
    item_id = record.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError("`id` must be a non-empty string (it seeds the A/B order)")
    return JudgePrompt(item_id, canonical_language(language), messages, checklist, reference, record.get("tag"),
                       where)


def read_judge_prompts(path: Path, limit: int | None = None) -> tuple[list[JudgePrompt], list[str]]:
    """(prompts, rejections 'file:line: reason')."""
    if not path.is_file():
        raise FileNotFoundError(f"judge prompts not found: {path}")
    kept, rejected, seen = [], [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if limit is not None and len(kept) >= limit:
            break
        where = f"{path}:{number}"
        try:
            prompt = _check(json.loads(line), where)
            if prompt.id in seen:
                raise ValueError(f"duplicate id {prompt.id!r}")
            seen.add(prompt.id)
            kept.append(prompt)
        except json.JSONDecodeError as e:
            rejected.append(f"{where}: not valid JSON ({e.msg})")
        except ValueError as e:
            rejected.append(f"{where}: {e}")
    return kept, rejected


def _release_rows(src: Path) -> list[tuple[str, object]]:
    if not src.is_file():
        raise FileNotFoundError(f"Sea-WildBench release file not found: {src}")
    if src.suffix == ".parquet":
        import pyarrow.parquet as pq
        return [(f"{src}:row {i}", r) for i, r in enumerate(pq.read_table(src).to_pylist())]
    text = src.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return [(f"{src}:item {i}", r) for i, r in enumerate(json.loads(text))]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((f"{src}:{number}", json.loads(line)))
            except json.JSONDecodeError as e:
                rows.append((f"{src}:{number}", ValueError(f"not valid JSON ({e.msg})")))
    return rows


def _reference(references) -> tuple[str | None, str | None]:
    """(answer, model) from WildBench's `references` {model: answer}: a GPT-4o answer when there is one."""
    if not isinstance(references, dict) or not references:
        return None, None
    keys = [k for k, v in references.items() if isinstance(v, str) and v]
    if not keys:
        return None, None
    key = next((k for k in keys if "gpt-4o" in k), keys[0])
    return references[key], key


def convert_sea_wildbench(src: Path, out: Path) -> tuple[int, int]:
    """Write our prompt records from a Sea-WildBench release file; returns (written, rejected)."""
    records, rejected = [], 0
    for where, row in _release_rows(src):
        try:
            if isinstance(row, Exception):
                raise row
            conversation = row["conversation_input"]
            messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
            code = str(row["language"]).strip().lower()
            language = SEA_WB_LANGUAGES.get(code, code)
            reference, reference_model = _reference(row.get("references"))
            record = {"id": str(row["session_id"]), "language": language, "messages": messages,
                      "checklist": list(row.get("checklist") or []), "tag": row.get("primary_tag")}
            if reference is not None:
                record |= {"reference": reference, "reference_model": reference_model}
            _check(record, where)
            records.append(record)
        except (KeyError, TypeError, ValueError) as e:
            rejected += 1
            print(f"{where}: {type(e).__name__}: {e}; skipped", file=sys.stderr)
    write_jsonl(out, records)
    return len(records), rejected
