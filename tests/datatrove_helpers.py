"""Helpers for the tests of the datatrove stages (clean, translate, quality): write corpora, read their outputs back."""

import gzip
import json
from pathlib import Path


def write_jsonl(path: Path, records) -> Path:
    """Records may be dicts, str lines or bytes lines (to plant broken input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as f:
        for r in records:
            if isinstance(r, dict):
                r = json.dumps(r, ensure_ascii=False)
            f.write((r if isinstance(r, bytes) else r.encode("utf-8")) + b"\n")
    return path


def read_records(folder: Path) -> list[dict]:
    out = []
    for p in sorted(folder.glob("*.jsonl*")):
        with (gzip.open(p, "rt") if p.suffix == ".gz" else open(p)) as f:
            out += [json.loads(line) for line in f]
    return out
