"""The `clean` fixture: run the pipeline on records or files in a temporary directory."""

import pytest
from datatrove_helpers import read_records, write_jsonl

from sailor2_jax.data.clean import CleanConfig, run_clean


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
