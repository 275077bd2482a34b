"""Reading JSONL and Parquet so that no line is ever lost.

datatrove's own readers skip lines they cannot parse (with a log warning); the cleaning run must instead count them
and route them to `rejected/`, so this reader yields a Document for every input line or row. Bad input becomes a
Document whose `metadata["reject"]` names the step ("read") and the reason, with the raw line kept.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, open_file
from datatrove.pipeline.base import PipelineStep
from fsspec.core import url_to_fs
from tqdm import tqdm

from sailor2_jax.data.clean.accounting import StepCounter
from sailor2_jax.data.clean.langid import LanguageIdentifier
from sailor2_jax.data.clean.languages import canonical_language

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".ndjson", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)
UNKNOWN = "unknown"  # language key of lines that could not be parsed


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


class InputReader(PipelineStep):
    """Yields one Document per input line/row, good or bad."""

    name = "read JSONL/Parquet (lossless)"
    type = "📖 - READER"

    def __init__(self, inputs: list[str], out_dir: DataFolder, text_key: str, max_document_bytes: int,
                 default_language: str | None, lid_model: str | None = None, progress: bool = True):
        super().__init__()
        self.files = list_input_files(inputs)
        self.out_dir = out_dir
        self.text_key = text_key
        self.max_document_bytes = max_document_bytes
        self.default_language = default_language
        self.lid_model = lid_model
        self.progress = progress

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        counter = StepCounter("read")
        lid = None
        for path in tqdm(shard(self.files, rank, world_size), desc=f"read (task {rank})", unit="file",
                         disable=not self.progress):
            rows = self._parquet_rows(path) if path.endswith(PARQUET_SUFFIXES) else self._jsonl_rows(path)
            for line_no, raw, record, error in rows:
                doc = self._document(path, line_no, raw, record, error)
                meta = doc.metadata
                if meta["reject"] is None and meta["lang"] is None:
                    # no language in the record nor on the command line: take fastText's guess, so the
                    # per-language rules can apply; the LID step still enforces its confidence cutoff and
                    # rejects guesses outside the 15 Sailor2 languages
                    lid = lid or LanguageIdentifier(self.lid_model)
                    meta["lang"] = lid.predict(doc.text, k=1)[0][0]
                    meta["lang_detected"] = True
                lang = meta["lang"] or UNKNOWN
                counter.entered(lang, len(raw))
                if meta["reject"] is None:
                    counter.left(lang, len(doc.text.encode("utf-8")))
                else:
                    counter.removed(lang, meta["reject"]["reason"])
                yield doc
        counter.save(self.out_dir, rank)

    def _jsonl_rows(self, path: str) -> Iterator[tuple[int, bytes, dict | None, str | None]]:
        with open_file(path, "rb", compression=_compression(path)) as f:
            for line_no, raw in enumerate(f, start=1):
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue  # a blank line holds no document
                try:
                    value = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    yield line_no, raw, None, "invalid_utf8"
                    continue
                except json.JSONDecodeError:
                    yield line_no, raw, None, "malformed_json"
                    continue
                if not isinstance(value, dict):
                    yield line_no, raw, None, "not_a_json_object"
                    continue
                yield line_no, raw, value, None

    def _parquet_rows(self, path: str) -> Iterator[tuple[int, bytes, dict | None, str | None]]:
        import pyarrow.parquet as pq

        with open_file(path, "rb") as f:
            row_no = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for record in batch.to_pylist():
                    row_no += 1
                    raw = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")
                    yield row_no, raw, json.loads(raw), None

    def _document(self, path: str, line_no: int, raw: bytes, record: dict | None, error: str | None) -> Document:
        meta = {"file": path, "line": line_no, "record": record, "lang": None, "reject": None}
        if record is None:
            meta["raw"] = _raw_text(raw)
            meta["reject"] = {"step": "read", "reason": error}
            return Document(text="", id=f"{path}:{line_no}", metadata=meta)
        text = record.get(self.text_key)
        lang = record.get("language")
        meta["lang"] = canonical_language(lang) if isinstance(lang, str) and lang.strip() else self.default_language
        doc_id = str(record["id"]) if record.get("id") is not None else f"{path}:{line_no}"
        reason = None
        if self.text_key not in record:
            reason = "missing_text"
        elif not isinstance(text, str):
            reason = "non_string_text"
        elif not text.strip():
            reason = "empty_text"
        elif len(text) > self.max_document_bytes:
            reason = "huge_document"
        else:
            try:
                if len(text.encode("utf-8")) > self.max_document_bytes:
                    reason = "huge_document"
            except UnicodeEncodeError:  # JSON escapes can spell lone surrogates, which no UTF-8 text holds
                reason = "invalid_unicode"
        if reason is not None:
            meta["reject"] = {"step": "read", "reason": reason}
            return Document(text=text if isinstance(text, str) else "", id=doc_id, metadata=meta)
        return Document(text=text, id=doc_id, metadata=meta)


def _raw_text(raw: bytes) -> dict:
    """A raw line for its rejection record: as text when it is UTF-8, else base64 (JSON cannot hold bad bytes)."""
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(raw).decode("ascii")}
