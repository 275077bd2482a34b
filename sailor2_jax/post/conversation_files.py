"""Conversation and preference records from JSONL and Parquet files, every line accounted for.

Conversations come in two formats, detected per file from its first readable record (a record in the other format
is read as such) or set by `format`:
- `messages` (OpenAI): `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`
- `sharegpt`: `{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}`
Preference records: `{"prompt": text | messages, "chosen": text | messages, "rejected": text | messages}`; a text
prompt is one user message, a text response one assistant message, and a message list (either style) that repeats
the prompt first (UltraFeedback's layout) has the prompt taken off. Any record may carry `language` (an ISO code;
`fil`→`tl`, `zsm`→`ms` and the like are understood) and `domain`. Prompt files (what `generate`, `onpolicy` and
the judge answer): one `{"prompt": text}` or `{"messages": [...]}` per line (`parse_prompt_line`).

A bad record never stops a run: it becomes a `Rejection` (file, line, reason, detail) and is counted by reason, so
read = kept + rejected always holds. Reasons: the reader's (`malformed_json`, `invalid_utf8`, `not_a_json_object`,
`unreadable_file`), `missing_field` (no messages/conversations, prompt, chosen or rejected), `bad_message` (not an
object, content not a string), `unknown_role`, `empty_content`, `no_assistant_turn` (nothing for the loss to learn),
`identical_responses` (chosen = rejected), and the tokeniser's `too_long` (sft_data.py, preference_data.py).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from sailor2_jax.post.chat import ROLES

ConversationFormat = Literal["auto", "messages", "sharegpt"]
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}
# where each format keeps its turns, and the keys of one turn
FORMAT_KEYS = {"messages": ("messages", "role", "content"), "sharegpt": ("conversations", "from", "value")}
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class Source:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, str]]
    language: str | None
    domain: str | None
    source: Source
    record: dict[str, Any]   # the record as read (selection writes it back unchanged)


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]     # the response turns only (the prompt taken off)
    rejected: list[dict[str, str]]
    language: str | None
    source: Source


@dataclasses.dataclass(frozen=True)
class Rejection:
    source: Source
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}{f' ({self.detail})' if self.detail else ''}"


class BadRecord(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclasses.dataclass
class Accounting:
    """What reading (and tokenising) did with every record: read = kept + sum(rejected)."""

    read: int = 0
    kept: int = 0
    truncated: int = 0                     # kept, cut at a turn boundary to fit
    rejected: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: list[Rejection] = dataclasses.field(default_factory=list)  # the first few, for the user
    files: int = 0
    formats: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    MAX_EXAMPLES = 20

    def reject(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        if len(self.examples) < self.MAX_EXAMPLES:
            self.examples.append(rejection)

    @property
    def balanced(self) -> bool:
        return self.read == self.kept + sum(self.rejected.values())

    def metrics(self, prefix: str = "data") -> dict[str, int]:
        """Flat counts for metrics.jsonl / TensorBoard."""
        out = {f"{prefix}/read": self.read, f"{prefix}/kept": self.kept, f"{prefix}/truncated": self.truncated,
               f"{prefix}/rejected": sum(self.rejected.values())}
        return out | {f"{prefix}/rejected/{k}": v for k, v in sorted(self.rejected.items())}

    def lines(self, examples: int = 5) -> list[str]:
        """A summary line and the first `examples` rejections with file:line and reason, for the terminal."""
        why = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common())
        formats = ", ".join(f"{k} {v}" for k, v in sorted(self.formats.items()))
        head = (f"{self.read} records read from {self.files} file(s) ({formats}): {self.kept} kept"
                + (f" ({self.truncated} cut to fit)" if self.truncated else "")
                + (f", {sum(self.rejected.values())} skipped: {why}" if self.rejected else ""))
        shown = self.examples[:examples]
        more = sum(self.rejected.values()) - len(shown)
        return [head] + [f"  skipped {r}" for r in shown] + ([f"  ... and {more} more"] if more > 0 else [])


def process_rows(batching, process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """(this process, processes) over which a file source's global batch is split (JAX's unless given)."""
    import jax

    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if batching.batch_size % count:
        raise ValueError(f"batch size {batching.batch_size} is not divisible by {count} processes")
    return index, count


def input_files(paths: Sequence[str]) -> list[str]:
    """Files and directories (searched recursively) → the JSONL/Parquet files, sorted; a missing path is an error."""
    from sailor2_jax.config import resolve_path
    from sailor2_jax.data.stages.inputs import list_input_files

    if not paths:
        raise ValueError("no input files given (data.files / --input)")
    return list_input_files([str(resolve_path(p)) for p in paths])


def file_stamps(paths: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime ns, size) of every input file: a cache key that changes when a file does."""
    import os

    return tuple((f, (st := os.stat(f)).st_mtime_ns, st.st_size) if "://" not in f else (f, 0, 0)
                 for f in input_files(paths))


def _rows(paths: Sequence[str], acc: Accounting) -> Iterator[tuple[Source, dict | None, str | None]]:
    from sailor2_jax.data.stages.inputs import read_rows

    files = input_files(paths)
    acc.files += len(files)
    for file in files:
        for line, _, record, error in read_rows(file, text_key=None):
            acc.read += 1
            yield Source(file, line), record, error


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRecord("bad_message", f"{where}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRecord("empty_content", f"{where} is empty")
    return value


def parse_messages(turns: Any, where: str, style: str | None = None) -> list[dict[str, str]]:
    """A list of turns in either style (`role`/`content` or `from`/`value`; `style` forces one) as our messages."""
    if not isinstance(turns, list) or not turns:
        raise BadRecord("missing_field" if turns is None else "bad_message",
                        f"{where}: expected a non-empty list of turns")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise BadRecord("bad_message", f"{where}[{i}]: expected an object, got {type(turn).__name__}")
        kind = style or ("sharegpt" if "from" in turn else "messages")
        _, role_key, content_key = FORMAT_KEYS[kind]
        role = turn.get(role_key)
        role = SHAREGPT_ROLES.get(role) if kind == "sharegpt" else role if role in ROLES else None
        if role is None:
            raise BadRecord("unknown_role", f"{where}[{i}].{role_key}: {turn.get(role_key)!r}")
        out.append({"role": role, "content": _text(turn.get(content_key), f"{where}[{i}].{content_key}")})
    return out


def _language(record: Mapping[str, Any]) -> str | None:
    from sailor2_jax.languages import canonical_language

    value = record.get("language")
    return canonical_language(value) if isinstance(value, str) and value.strip() else None


def detect_format(record: Mapping[str, Any]) -> str | None:
    for kind, (key, _, _) in FORMAT_KEYS.items():
        if key in record:
            return kind
    return None


def read_conversations(paths: Sequence[str], fmt: ConversationFormat = "auto",
                       acc: Accounting | None = None) -> Iterator[Conversation]:
    """The good conversations of `paths` in file order; every other record is counted in `acc` with its reason."""
    acc = acc if acc is not None else Accounting()
    file_format: dict[str, str] = {}
    for source, record, error in _rows(paths, acc):
        if record is None:
            acc.reject(Rejection(source, error))
            continue
        kind = file_format.get(source.file) if fmt == "auto" else fmt
        if kind is None and (kind := detect_format(record)) is not None:
            file_format[source.file] = kind
            acc.formats[kind] += 1
        try:
            if kind is None:
                raise BadRecord("missing_field", "neither `messages` nor `conversations`")
            key = FORMAT_KEYS[kind][0]
            if key not in record and fmt == "auto" and (other := detect_format(record)) is not None:
                kind, key = other, FORMAT_KEYS[other][0]  # a file mixing both formats (e.g. a selection's output)
            if key not in record:
                raise BadRecord("missing_field", f"no `{key}` (the file's format is {kind})")
            messages = parse_messages(record[key], key, kind)
            if not any(m["role"] == "assistant" for m in messages):
                raise BadRecord("no_assistant_turn", f"roles {[m['role'] for m in messages]}")
        except BadRecord as e:
            acc.reject(Rejection(source, e.reason, e.detail))
            continue
        domain = record.get("domain")
        yield Conversation(messages, _language(record), domain if isinstance(domain, str) else None, source, record)


def _response(value: Any, prompt: list[dict[str, str]], field: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "assistant", "content": _text(value, field)}]
    if value is None:
        raise BadRecord("missing_field", f"no `{field}`")
    turns = parse_messages(value, field)
    if turns[:len(prompt)] == prompt and len(turns) > len(prompt):
        turns = turns[len(prompt):]
    if not any(m["role"] == "assistant" for m in turns):
        raise BadRecord("no_assistant_turn", f"{field}: roles {[m['role'] for m in turns]}")
    return turns


def read_preferences(paths: Sequence[str], acc: Accounting | None = None) -> Iterator[PreferencePair]:
    """The good preference pairs of `paths` in file order; every other record is counted in `acc`."""
    acc = acc if acc is not None else Accounting()
    acc.formats["preference"] += len(input_files(paths))
    for source, record, error in _rows(paths, acc):
        if record is None:
            acc.reject(Rejection(source, error))
            continue
        try:
            if "prompt" not in record:
                raise BadRecord("missing_field", "no `prompt`")
            prompt = record["prompt"]
            prompt = ([{"role": "user", "content": _text(prompt, "prompt")}] if isinstance(prompt, str)
                      else parse_messages(prompt, "prompt"))
            chosen = _response(record.get("chosen"), prompt, "chosen")
            rejected = _response(record.get("rejected"), prompt, "rejected")
            if chosen == rejected:
                raise BadRecord("identical_responses", "chosen equals rejected")
        except BadRecord as e:
            acc.reject(Rejection(source, e.reason, e.detail))
            continue
        yield PreferencePair(prompt, chosen, rejected, _language(record), source)


# --- prompt files (generate, onpolicy, the judge): one prompt or chat per JSONL line ------------------------------

def prompt_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of each non-blank line of a JSONL prompt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            if raw.strip():
                yield number, raw


def parse_prompt_line(raw: str, chat: bool) -> tuple[dict, list[dict] | str]:
    """(the record, its messages or raw prompt), or a ValueError saying what is wrong with the line: an object with
    exactly one of `prompt` (text; a user message when `chat`) and `messages` (a chat)."""
    from sailor2_jax.post.chat import check_messages

    try:
        record = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if ("prompt" in record) == ("messages" in record):
        raise ValueError("needs exactly one of `prompt` and `messages`")
    if "messages" in record:
        return record, check_messages(record["messages"], "messages")
    prompt = record["prompt"]
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("`prompt` must be a non-empty string")
    return record, [{"role": "user", "content": prompt}] if chat else prompt
