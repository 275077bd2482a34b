"""Reading JSONL and Parquet inputs so that no line is ever lost.

datatrove's own readers skip lines they cannot parse (with a log warning); the data stages must instead count them
and route them to `rejected/`, so these readers yield every input line or row, good or bad: a bad one with the
reason it is bad and its raw bytes kept.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import open_file
from datatrove.pipeline.base import PipelineStep
from fsspec.core import url_to_fs
from tqdm import tqdm


JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".ndjson", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)


def list_input_files(inputs: list[str]) -> list[str]:
    """Expand directories (recursively) into their JSONL/Parquet files; sorted, so shards are deterministic."""
    files: list[str] = []
    for spec in inputs:
        fs, path = url_to_fs(spec)
        if fs.isdir(path):
            found = [p for p in fs.find(path) if p.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)]
            if not found:
                raise FileNotFoundError(f"no .jsonl/.json/.parquet files under {spec}")
            files += [fs.unstrip_protocol(p) if "://" in spec else p for p in sorted(found)]
        elif fs.isfile(path):
            files.append(spec)
        else:
            raise FileNotFoundError(f"input not found: {spec}")
    return sorted(dict.fromkeys(files))


def shard(files: list[str], rank: int, world_size: int) -> list[str]:
    """Contiguous chunks, so that rank order is input order (MinHash keeps the first document of a cluster)."""
    n = len(files)
    return files[rank * n // world_size:(rank + 1) * n // world_size]


def _compression(path: str) -> str | None:
    return "gzip" if path.endswith(".gz") else "zstd" if path.endswith(".zst") else None


def read_rows(path: str, text_key: str | None = "text") -> Iterator[tuple[int, bytes, dict | None, str | None]]:
    """(line or row number, raw bytes, record or None, reason it is bad or None) for every line or row of a JSONL or
    Parquet file; a file cut short or corrupt ends with one row for its unreadable rest. A Parquet row whose
    `text_key` column holds a non-string is flagged (`None`: no such check, for records without a text field)."""
    return _parquet_rows(path, text_key) if path.endswith(PARQUET_SUFFIXES) else _jsonl_rows(path)


def _jsonl_rows(path: str) -> Iterator[tuple[int, bytes, dict | None, str | None]]:
    line_no = 0
    try:
        with open_file(path, "rb", compression=_compression(path)) as f:
            for line_no, raw in enumerate(f, start=1):
                raw = raw.rstrip(b"\r\n")
                if raw.strip():  # a blank line holds no document
                    yield line_no, raw, *_parse(raw)
    except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt archive: the rest is one rejection
        yield line_no + 1, f"{type(e).__name__}: {e}".encode(), None, "unreadable_file"


def _parquet_rows(path: str, text_key: str | None) -> Iterator[tuple[int, bytes, dict | None, str | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row_no = 0
    try:
        with open_file(path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for record in batch.to_pylist():
                    row_no += 1
                    # JSON-safe copy for the outputs (bytes, dates → str); the type check uses the original
                    raw = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")
                    text = record.get(text_key) if text_key is not None else None
                    odd = text is not None and not isinstance(text, str)
                    yield row_no, raw, json.loads(raw), "non_string_text" if odd else None
    except (OSError, pa.ArrowException) as e:
        yield row_no + 1, f"{type(e).__name__}: {e}".encode(), None, "unreadable_file"


class RecordReader(PipelineStep):
    """Every line or row of this task's shard of `inputs` as a Document holding the record (`metadata["record"]`),
    or, for a line that is not a JSON object, its rejection ("read", reason) with the raw line; `text` is empty.
    The reader of the translation and quality pipelines, which look at other fields than `text`."""

    name = "read JSONL/Parquet records (lossless)"
    type = "📖 - READER"

    def __init__(self, inputs: list[str], desc: str = "read", progress: bool = True):
        super().__init__()
        self.files = list_input_files(inputs)
        self.desc, self.progress = desc, progress

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        files = shard(self.files, rank, world_size)
        for path in tqdm(files, desc=f"{self.desc} (task {rank}, {len(files)} files)", unit="file",
                         disable=not self.progress):
            for line_no, raw, record, error in read_rows(path):
                meta = {"file": path, "line": line_no, "record": record, "reject": None}
                if record is None:
                    meta["raw"] = raw_for_rejection(raw)
                    meta["reject"] = {"step": "read", "reason": error}
                doc_id = str(record["id"]) if record and record.get("id") is not None else f"{path}:{line_no}"
                yield Document(text="", id=doc_id, metadata=meta)


def _parse(raw: bytes) -> tuple[dict | None, str | None]:
    """(record, None) or (None, reason)."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        return None, "malformed_json"
    if not isinstance(value, dict):
        return None, "not_a_json_object"
    return value, None


def raw_for_rejection(raw: bytes) -> dict:
    """A raw line for its rejection record: as text when it is UTF-8, else base64 (JSON cannot hold bad bytes)."""
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(raw).decode("ascii")}
