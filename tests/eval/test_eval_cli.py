"""`sailor2-jax eval` on the packaged embedded tasks and `sailor2-jax eval-report` over two runs, end to end."""

from __future__ import annotations

import json

import pytest

from sailor2_jax.cli import main


def test_eval_and_report(hf_dir, tmp_path, capsys):
    runs = []
    for name in ("base", "final"):
        out = tmp_path / name
        # the packaged demo tasks, two records each (the files interleave languages: en and zh)
        assert main(["eval", "--model", str(hf_dir), "--dtype", "float32", "--output-dir", str(out), "--name", name,
                     "limit=2", "batch_size=2", "max_length=256"]) == 0
        runs.append(out)
        results = json.loads((out / "results.json").read_text())
        assert set(results["tasks"]) == {"udhr_ppl", "udhr_continuation", "udhr_translation"}
        assert results["model"] == name
        assert {"ppl", "bpb", "ppl/en", "ppl/zh"} <= set(results["tasks"]["udhr_ppl"])
        assert {"acc", "acc_norm", "ppl_sc"} <= set(results["tasks"]["udhr_continuation"])
        assert {"chrf++", "chrf++/en-zh", "language_consistency", "language_consistency/en-zh"} <= set(
            results["tasks"]["udhr_translation"])
        lines = (out / "udhr_translation.jsonl").read_text().splitlines()
        assert len(lines) == 2 and "output" in json.loads(lines[0])
    capsys.readouterr()
    assert main(["eval-report", *map(str, runs), "--output-dir", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "udhr_ppl" in printed and "base" in printed and "final" in printed
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    ppl = next(r for r in report["rows"] if r["task"] == "udhr_ppl" and r["metric"] == "ppl")
    # the same model twice: the same numbers (one program computing the same thing twice)
    assert ppl["values"]["base"] == ppl["values"]["final"] > 1
    assert (tmp_path / "report" / "udhr_ppl.ppl.png").stat().st_size > 1000
    # ppl, bpb, acc, acc_norm, ppl_sc, chrf++, language_consistency
    assert len(list((tmp_path / "report").glob("*.png"))) == 7


def test_eval_errors(hf_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(hf_dir), "--tasks", "nonexistent", "--output-dir", str(tmp_path)]) != 0
    assert "nonexistent" in capsys.readouterr().err
    assert main(["eval-report", str(tmp_path / "missing")]) != 0
    assert "no results.json" in capsys.readouterr().err
    bad = tmp_path / "t.yaml"
    bad.write_text("tasks:\n  - {name: a, type: multiple_choice, data: x.jsonl, num_fewshot: 2}\n")
    assert main(["eval", "--model", str(hf_dir), "--tasks", str(bad), "--output-dir", str(tmp_path)]) != 0
    assert "num_fewshot=2 needs fewshot_data" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["flores", "xcopa", "belebele", "m3exam", "qa"])
def test_sailcompass_task_files_load(name):
    from sailor2_jax.eval.config import load_tasks
    assert load_tasks(name).tasks
