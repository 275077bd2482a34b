"""Output records and the per-task JSONL files they go to.

Kept records are the input record with `text` replaced by the cleaned text (and `language` filled in when the input
had none). Rejected records are the input record as it entered the rejecting step plus `_rejection` (step, reason,
source file and line); an unparseable line is kept as `raw` (or `raw_base64` for bytes that are not UTF-8).
"""

from __future__ import annotations

import json

from datatrove.data import Document
from datatrove.io import DataFolder

REJECTION_KEY = "_rejection"


def kept_record(doc: Document, text_key: str) -> dict:
    record = dict(doc.metadata["record"])
    record[text_key] = doc.text
    record.setdefault("language", doc.metadata["lang"])
    return record


def rejected_record(doc: Document, text_key: str) -> dict:
    meta = doc.metadata
    rejection = {**meta["reject"], "file": meta["file"], "line": meta["line"]}
    if meta["record"] is None:
        return {REJECTION_KEY: rejection, **meta["raw"]}
    record = dict(meta["record"])
    if isinstance(record.get(text_key), str):  # the text as it entered the step; a missing or odd value stays as is
        record[text_key] = doc.text
    return {REJECTION_KEY: rejection, **record}


def jsonl_file(name: str, compression: str) -> tuple[str, str | None]:
    """The path of the JSONL file `name` and its datatrove compression, for the config's `compression`."""
    gzip = compression == "gzip"
    return name + (".jsonl.gz" if gzip else ".jsonl"), "gzip" if gzip else None


class JsonlOut:
    """One JSONL file (gzip or plain), opened on first write so that empty outputs leave no file."""

    def __init__(self, folder: DataFolder, name: str, compression: str):
        self.folder = folder
        self.path, self.compression = jsonl_file(name, compression)
        self._f = None
        self.count = 0

    def write(self, record: dict) -> None:
        if self._f is None:
            self._f = self.folder.open(self.path, "wt", compression=self.compression)
        try:
            self._f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        except UnicodeEncodeError:  # lone surrogates (legal in JSON escapes) cannot be UTF-8: keep them escaped
            self._f.write(json.dumps(record, ensure_ascii=True, default=str) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
