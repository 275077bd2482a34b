"""Reading documents from JSONL, Parquet and text-line files, with bad input either fatal or skipped and counted.

Every problem names the file and the line (Parquet: the row). With `on_bad_input="skip"` the document is skipped and
counted under its reason; empty documents (nothing but whitespace) are always skipped and counted. The counts live in
`COUNTS`, keyed by file, so whoever drove the read (the Beam cache, the in-memory loader) can report them: nothing
is dropped silently.
"""

from __future__ import annotations

import collections
import glob
import gzip
import io
import json
import threading
from collections.abc import Iterator

from sailor2_jax.config import resolve_path
from sailor2_jax.data.config import FileSource, OnBadInput

REASONS = ("unreadable_file", "invalid_utf8", "malformed_line", "missing_field", "empty")


class BadInputError(ValueError):
    """Bad input where the config says errors are fatal; the message starts with `file:line:`."""


class _Counts:
    """Thread-safe skip counts per file (tf.data runs readers on its own threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_file: dict[str, collections.Counter] = {}

    def reset(self, file: str) -> None:
        with self._lock:
            self._by_file[file] = collections.Counter()

    def add(self, file: str, reason: str) -> None:
        with self._lock:
            self._by_file.setdefault(file, collections.Counter())[reason] += 1

    def pop(self, files: list[str]) -> dict[str, int]:
        """Summed counts of `files`, forgotten afterwards (each read reports once)."""
        total: collections.Counter = collections.Counter()
        with self._lock:
            for f in files:
                total.update(self._by_file.pop(f, {}))
        return dict(total)


COUNTS = _Counts()


def expand_files(source: FileSource) -> list[str]:
    """The source's files, sorted; a pattern that matches nothing is an error (a typo must not mean no data)."""
    files: list[str] = []
    for pattern in source.files:
        path = resolve_path(pattern)
        matches = sorted(glob.glob(str(path))) if any(ch in pattern for ch in "*?[") else [str(path)]
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r} (looked for {path})")
        files.extend(matches)
    return files


def _problem(file: str, where: str, reason: str, message: str, on_bad: OnBadInput) -> None:
    if on_bad == "error":
        raise BadInputError(f"{file}:{where}: {message} (set on_bad_input: skip to skip and count such input)")
    COUNTS.add(file, reason)


def _open_bytes(file: str) -> io.BufferedIOBase:
    return gzip.open(file, "rb") if file.endswith(".gz") else open(file, "rb")


def _line_documents(file: str, kind: str, field: str, on_bad: OnBadInput) -> Iterator[str]:
    with _open_bytes(file) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _problem(file, str(lineno), "invalid_utf8", f"invalid UTF-8 at byte {e.start}", on_bad)
                continue
            if kind == "text":
                text = line.rstrip("\r\n")
            else:
                if not line.strip():
                    COUNTS.add(file, "empty")
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    _problem(file, str(lineno), "malformed_line", f"malformed JSON: {e.msg} at column {e.colno}",
                             on_bad)
                    continue
                text = record.get(field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    _problem(file, str(lineno), "missing_field", f"no string field {field!r}", on_bad)
                    continue
            if not text.strip():
                COUNTS.add(file, "empty")
                continue
            yield text


def _parquet_documents(file: str, field: str, on_bad: OnBadInput) -> Iterator[str]:
    import pyarrow.parquet as pq  # only parquet sources need it

    pf = pq.ParquetFile(file)
    if field not in pf.schema_arrow.names:
        raise BadInputError(f"{file}: no column {field!r} (columns: {pf.schema_arrow.names})")
    row = 0
    for batch in pf.iter_batches(columns=[field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            row += 1
            if not isinstance(text, str):
                _problem(file, f"row {row}", "missing_field", f"field {field!r} is not a string", on_bad)
            elif not text.strip():
                COUNTS.add(file, "empty")
            else:
                yield text


def read_documents(file: str, source: FileSource, on_bad: OnBadInput) -> Iterator[str]:
    """The non-empty documents of one file; counts for `file` start from zero on each read."""
    COUNTS.reset(file)
    try:
        if source.type == "parquet":
            yield from _parquet_documents(file, source.text_field, on_bad)
        else:
            yield from _line_documents(file, source.type, source.text_field, on_bad)
    except OSError as e:  # missing, unreadable, corrupt gzip; pyarrow raises OSError subclasses too
        if on_bad == "error":
            raise BadInputError(f"{file}: cannot read: {e}") from None
        COUNTS.add(file, "unreadable_file")
