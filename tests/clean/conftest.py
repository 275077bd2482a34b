"""Helpers for the cleaning tests: write corpora, run the pipeline quietly, read its outputs back."""

import gzip
import json
from pathlib import Path

import pytest

from sailor2_jax.data.clean import CleanConfig, run_clean


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


@pytest.fixture
def clean(tmp_path):
    """clean(records_or_paths, **config) → (summary, kept records, rejected records)."""

    def _run(inputs, **config):
        if inputs and isinstance(inputs[0], (dict, str, bytes)):
            inputs = [write_jsonl(tmp_path / "in" / "docs.jsonl", inputs)]
        config.setdefault("progress", False)
        out = tmp_path / "out"
        summary = run_clean([str(p) for p in inputs], out, CleanConfig(**config))
        return summary, read_records(out / "kept"), read_records(out / "rejected")

    return _run
