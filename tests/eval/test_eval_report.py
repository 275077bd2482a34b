"""`eval-report` side by side with the published Sailor2 numbers (data/eval/sailor2_published.jsonl): each run's
value is the mean of the benchmark's metric over its tasks, shown only when the run has all of them; sources and
caveats are printed."""

from __future__ import annotations

import json

import pytest

from sailor2_jax.cli import main
from sailor2_jax.eval.report import published


def _run(path, tasks):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"tasks": tasks, "model": path.name, "time": "t"}))
    return str(path)


def test_published_numbers_side_by_side(tmp_path, capsys):
    flores = {f"flores_{a}_{b}": {"bleu_sc": 30.0 + i, "chrf++_sc": 50.0, "language_consistency": 90.0}
              for i, (a, b) in enumerate([("en", "id"), ("id", "en"), ("en", "th"), ("th", "en"), ("en", "vi"),
                                          ("vi", "en")])}
    base = _run(tmp_path / "base", {"tydiqa_id": {"em_tydiqa": 60.0, "f1_tydiqa": 70.0},
                                    "m3exam_vi": {"option_sc": 50.0}, **flores})
    chat = _run(tmp_path / "dpo", {"judge": {"score": 0.4, "score/th": 0.5}, "xcopa_th_ppl": {"ppl_sc": 70.0}})
    assert main(["eval-report", base, chat, "--output-dir", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "Side by side with the published Sailor2 numbers" in out and "arXiv 2502.12982" in out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = {r["benchmark"]: r for r in report["published"]}
    assert rows["TyDiQA-id"]["runs"] == {"base": 60.0, "dpo": None}
    assert rows["TyDiQA-id"]["values"]["Sailor2-8B"] == 66.4
    flores_row = next(r for b, r in rows.items() if b.startswith("FLORES"))
    assert flores_row["runs"]["base"] == pytest.approx(32.5)  # the mean of 30..35 over the six directions
    assert next(r for b, r in rows.items() if b.startswith("XCOPA"))["runs"] == {"base": None, "dpo": None}
    assert rows["Sea-WildBench"]["runs"]["dpo"] == 0.4
    assert any(r["metric"] == "language_consistency" for r in report["rows"])
    assert main(["eval-report", base, "--published", "none"]) == 0
    assert "published" not in capsys.readouterr().out


def test_every_published_row_names_its_source():
    rows = published()
    assert {r["benchmark"] for r in rows} >= {"TyDiQA-id", "M3Exam-th", "M3Exam-vi", "M3Exam-jv", "Sea-WildBench"}
    assert all(r["source"] and r["values"] and r["tasks"] for r in rows)
