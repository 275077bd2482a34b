"""Bad input: errors name file and line, or (on_bad_input: skip) input is skipped and counted; empties are counted."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sailor2_jax.data.config import FileSource
from sailor2_jax.data.sources import COUNTS, BadInputError, expand_files, read_documents

GOOD = [{"text": "first document"}, {"text": "second document"}]


def write_bad_jsonl(path):
    lines = [json.dumps(GOOD[0]).encode(),                      # 1 ok
             b'{"text": "caf\xe9 latin-1"}',                      # 2 invalid UTF-8
             b'{"text": "unterminated',                           # 3 malformed JSON
             json.dumps({"body": "no text field"}).encode(),    # 4 missing field
             json.dumps({"text": "   \n "}).encode(),           # 5 empty document
             b"",                                                # 6 blank line
             json.dumps({"text": 7}).encode(),                  # 7 text is not a string
             json.dumps(GOOD[1]).encode()]                      # 8 ok
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def read(file, type_="jsonl", on_bad="error"):
    return list(read_documents(file, FileSource(type=type_, files=[file]), on_bad))


@pytest.mark.parametrize("line, message", [(2, "invalid UTF-8"), (3, "malformed JSON"), (4, "no string field")])
def test_errors_name_file_and_line(tmp_path, line, message):
    file = write_bad_jsonl(tmp_path / "bad.jsonl")
    # a good line, then the bad line under test: the error must point at line 2 of that file
    data = open(file, "rb").read().split(b"\n")
    (tmp_path / "one.jsonl").write_bytes(data[0] + b"\n" + data[line - 1] + b"\n")
    with pytest.raises(BadInputError, match=rf"one\.jsonl:2: {message}"):
        read(str(tmp_path / "one.jsonl"))


def test_skip_mode_counts_every_skipped_line(tmp_path):
    file = write_bad_jsonl(tmp_path / "bad.jsonl")
    assert read(file, on_bad="skip") == [g["text"] for g in GOOD]
    assert COUNTS.pop([file]) == {"invalid_utf8": 1, "malformed_line": 1, "missing_field": 2, "empty": 2}


def test_empty_documents_are_counted_even_in_error_mode(tmp_path):
    file = tmp_path / "e.jsonl"
    file.write_text(json.dumps({"text": ""}) + "\n" + json.dumps(GOOD[0]) + "\n")
    assert read(str(file)) == [GOOD[0]["text"]]
    assert COUNTS.pop([str(file)]) == {"empty": 1}


def test_unreadable_file(tmp_path):
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"this is not gzip data")
    with pytest.raises(BadInputError, match=r"broken\.jsonl\.gz: cannot read"):
        read(str(broken))
    assert read(str(broken), on_bad="skip") == []
    assert COUNTS.pop([str(broken)]) == {"unreadable_file": 1}


def test_gzip_text_and_parquet_sources(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(g) for g in GOOD) + "\n")
    assert read(str(gz)) == [g["text"] for g in GOOD]
    txt = tmp_path / "a.txt"
    txt.write_text("line one\n\nline two\r\n")
    assert read(str(txt), "text") == ["line one", "line two"]
    assert COUNTS.pop([str(txt)]) == {"empty": 1}
    pqf = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["x y", None, "", "z"]}), pqf)
    with pytest.raises(BadInputError, match=r"a\.parquet:row 2: field 'text' is not a string"):
        read(str(pqf), "parquet")
    assert read(str(pqf), "parquet", "skip") == ["x y", "z"]
    assert COUNTS.pop([str(pqf)]) == {"missing_field": 1, "empty": 1}
    with pytest.raises(BadInputError, match="no column 'body'"):
        list(read_documents(str(pqf), FileSource(type="parquet", files=[str(pqf)], text_field="body"), "error"))


def test_patterns_that_match_nothing_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_files(FileSource(type="jsonl", files=[str(tmp_path / "*.jsonl")]))
