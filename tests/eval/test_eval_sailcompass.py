"""`sailor2-jax eval-import sailcompass` on a stand-in checkout and data of ours in SailCompass' formats
(sailcompass_fixture.py), the config interpreter's limits, and SailCompass' scoring rules on hand-computed cases
(the comparison with SailCompass' and OpenCompass' own code is test_eval_opencompass.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sailcompass_fixture import write_checkout, write_data

from sailor2_jax.cli import main
from sailor2_jax.eval import sailcompass_metrics as sc


@pytest.fixture()
def fixture_dirs(tmp_path):
    return write_checkout(tmp_path / "sailcompass"), write_data(tmp_path / "data"), tmp_path / "out"


def test_import_writes_tasks_and_counts_rejections(fixture_dirs, capsys):
    checkout, data, out = fixture_dirs
    # a broken line and an answer that is no label: rejected with file:line, the rest written
    with (data / "xcopa" / "th_test.jsonl").open("a") as f:
        f.write("{broken\n")
        f.write(json.dumps({"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 1}) + "\n")
    bad = json.loads((data / "m3exam" / "vietnamese-questions-test-4.json").read_text())
    bad.append({"question_text": "q", "options": ["A. x", "B. y", "C. z", "D. w"], "answer_text": "E"})
    (data / "m3exam" / "vietnamese-questions-test-4.json").write_text(json.dumps(bad))
    assert main(["eval-import", "sailcompass", "--src", str(checkout), "--data", str(data), "--output-dir",
                 str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{data / 'xcopa' / 'th_test.jsonl'}:3: ValueError: not valid JSON" in captured.err
    assert f"{data / 'm3exam' / 'vietnamese-questions-test-4.json'}:3: ValueError: answer 'E' is none of the labels" \
        in captured.err
    assert "m3exam_jv" in captured.out and "(SailCompass m3exam-id)" in captured.out
    from sailor2_jax.eval.config import load_tasks
    from sailor2_jax.eval.task_records import read_records
    tasks = load_tasks(out / "sailcompass.yaml")
    assert len(tasks.tasks) == 9
    counts = {t.name: len(read_records(t, tasks.path(t.data), report=False).kept) for t in tasks.tasks}
    # xcopa: 2 good + 1 good appended (label 1) of 4 lines read; m3exam vi ppl: 2 of 3
    assert counts["xcopa_th_ppl"] == 3 and counts["m3exam_vi_ppl4"] == 2 and counts["tydiqa_id"] == 1
    by_name = {t.name: t for t in tasks.tasks}
    assert by_name["m3exam_vi"].metrics == ["option_sc"] and not by_name["m3exam_vi"].language_consistency
    assert by_name["m3exam_vi"].sailcompass.option_labels == ["Hỏi: "]
    assert by_name["xquad_th"].metrics == ["em_sc", "f1_sc"] and by_name["xquad_th"].max_new_tokens == 24
    assert by_name["flores_en_th"].metrics == ["bleu_sc", "chrf++_sc"]
    assert by_name["xcopa_th_ppl"].type == "multiple_choice"
    # the checkout's strings went into the user's task file, none is in this repository's code
    assert by_name["flores_en_th"].sailcompass.answer_labels == ["ตอบ: ", "đáp: ", "jawab: ", "th: "]


def test_import_errors_name_what_is_wrong(fixture_dirs, tmp_path, capsys):
    checkout, data, out = fixture_dirs
    assert main(["eval-import", "sailcompass", "--src", str(tmp_path), "--data", str(data), "--output-dir",
                 str(out)]) != 0
    assert "not a SailCompass checkout" in capsys.readouterr().err
    assert main(["eval-import", "sailcompass", "--src", str(checkout), "--output-dir", str(out)]) != 0
    assert "needs --data" in capsys.readouterr().err
    assert main(["eval-import", "sailcompass", "--src", str(checkout), "--data", str(data), "--output-dir", str(out),
                 "--only", "nope"]) != 0
    assert "no SailCompass config named nope" in capsys.readouterr().err
    (data / "flores200" / "tha_Thai_devtest.jsonl").unlink()
    assert main(["eval-import", "sailcompass", "--src", str(checkout), "--data", str(data), "--output-dir", str(out),
                 "--only", "flores_en_th"]) != 0
    assert "tha_Thai_devtest.jsonl" in capsys.readouterr().err


def test_config_interpreter_runs_nothing(tmp_path):
    from sailor2_jax.eval.sailcompass_source import Unsupported, read_dataset_configs, read_module
    f = tmp_path / "c.py"
    f.write_text("import os\nx = os.system('touch pwned')\ny = f'{chr(65 + 2)}-{{z}}'\n"
                 "z = {str(k): [k * 2 for k in range(2)] for k in ['a', 'b']}\nw = open('x').read()\n")
    env = read_module(f)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert env["y"] == "C-{z}" and env["z"] == {"a": [0, 2], "b": [0, 2]}
    assert isinstance(env["w"], Unsupported) and "c.py:5" in str(env["w"])
    with pytest.raises(ValueError, match="no `\\*_datasets` list"):
        read_dataset_configs(f)


def test_opencompass_join_rule():
    from sailor2_jax.eval.sailcompass import join_items, safe_format, split_choices
    # an empty item adds nothing, but from the second item on a separator is owed (even after an empty first one);
    # braces that are no column stay
    assert join_items(["a", None, "b"]) == "a\nb" and join_items([None, "a"]) == "\na"
    assert safe_format("{q} {x} $\\frac{3}{5}$", {"q": "Q?", "x": 1}) == "Q? 1 $\\frac{3}{5}$"
    context, choices = split_choices([["s", "q", "A: x"], ["s", "q", "A: y"]])
    assert (context, choices) == ("s\nq", ["\nA: x", "\nA: y"])


@pytest.fixture(scope="module")
def scoring():
    return sc.SailCompassScoring(
        answer_labels=["คำตอบ: ", "answer: "], options="ABCD1๑", option_labels=["Question: "],
        option_patterns=["[Aa]nswer:?\\s?([{options}])", "(\\s|^)[{options}](\\s|$)", "[{options}]"],
        option_map={"1": "A", "๑": "A"})


def test_postprocess_and_options(scoring):
    assert sc.pred_postprocess("  คำตอบ: กรุงเทพ  ฯ!! \nต่อ", scoring.answer_labels) == "กรุงเทพ ฯ"
    assert sc.pred_postprocess("a !!", []) == "a !!"  # only punctuation right after the last word character goes
    assert sc.pred_postprocess("x  ,  y .", []) == "x, y."
    assert sc.option_score(" B. Hà Nội", "B", scoring) == 100 and sc.option_score("Question: A\nB", "A", scoring) == 100
    assert sc.option_score("1", "A", scoring) == 100 and sc.option_score("๑", "A", scoring) == 100  # mapped
    assert sc.option_score("1", "A", scoring.replace(options="ABCD")) == 0  # a digit that is no option: not parsed
    assert sc.option_score("", "A", scoring) == 0 and sc.option_score("b", "B", scoring) == 0


def test_thai_f1_uses_words(scoring):
    # newmm: "เมืองหลวงกรุงเทพ" → เมืองหลวง | กรุงเทพ; "กรุงเทพมหานคร" → กรุงเทพมหานคร (one dictionary word) ...
    # so take a reference of two words, one shared: P = 1/2, R = 1/2
    assert sc.thai_words("เมืองหลวงกรุงเทพ") == ["เมืองหลวง", "กรุงเทพ"]
    em, f1 = sc.ans_scores("คำตอบ: เมืองหลวงกรุงเทพ", "กรุงเทพ ไทย", scoring, is_thai=lambda t: True)
    assert (em, f1) == (0.0, pytest.approx(50.0))  # pred words {เมืองหลวง, กรุงเทพ}, ref {กรุงเทพ, ไทย}
    # the same text split on whitespace only (not Thai by language ID): one token each, no overlap
    assert sc.ans_scores("เมืองหลวงกรุงเทพ", "กรุงเทพ ไทย", scoring, is_thai=lambda t: False)[1] == 0.0
    assert sc.ans_scores("Answer: The Dog.", "the dog", scoring, is_thai=lambda t: False) == (100.0, 100.0)


def test_textgen_lowercases_and_uses_13a(scoring):
    got = sc.textgen_scores(["แมว นอน บน เสื่อ สีแดง\nmore", "THE CAT SAT ON THE MAT."],
                            ["แมว นอน บน เสื่อ สีแดง", "the cat sat on the mat."], scoring)
    # predictions: first line, lower-cased, the final "." dropped (references keep theirs: SailCompass
    # post-processes predictions only)
    from sacrebleu.metrics import BLEU, CHRF
    preds = ["แมว นอน บน เสื่อ สีแดง", "the cat sat on the mat"]
    refs = [["แมว นอน บน เสื่อ สีแดง", "the cat sat on the mat."]]
    assert got["bleu_sc"] == pytest.approx(BLEU(tokenize="13a").corpus_score(preds, refs).score)
    assert got["bleu_sc"] < 100
    assert got["chrf++_sc"] == pytest.approx(CHRF(word_order=2).corpus_score(preds, refs).score)


def test_imported_generation_tasks_run(fixture_dirs, loaded):
    """The imported generation tasks through `eval` on a tiny model: SailCompass' scorers on the raw outputs, language
    consistency where the output is text (not for option letters), every record scored."""
    from sailor2_jax.eval.config import load_tasks
    from sailor2_jax.eval.run import Evaluator
    checkout, data, out = fixture_dirs
    assert main(["eval-import", "sailcompass", "--src", str(checkout), "--data", str(data), "--output-dir", str(out),
                 "--only", "xquad_th", "tydiqa_id", "flores_en_th", "m3exam_vi"]) == 0
    tasks = load_tasks(out / "sailcompass.yaml", ["max_length=256", "batch_size=2"])
    summary = Evaluator(loaded, tasks).run(out / "run", "tiny")
    m = summary["tasks"]
    assert {"em_sc", "f1_sc", "language_consistency", "em_sc/th"} <= set(m["xquad_th"])
    assert {"em_tydiqa", "f1_tydiqa", "language_consistency"} <= set(m["tydiqa_id"])
    assert {"bleu_sc", "chrf++_sc", "language_consistency/en-th"} <= set(m["flores_en_th"])
    assert set(m["m3exam_vi"]) == {"option_sc", "option_sc/vi"}
    assert summary["records"]["xquad_th"] == {"read": 2, "scored": 2, "skipped": 0}
    rows = [json.loads(x) for x in (out / "run" / "flores_en_th.jsonl").read_text().splitlines()]
    assert all(r["output"] == r["raw_output"] and "output_language" in r for r in rows)
    expected = 100 * sum(r["language_consistent"] for r in rows) / len(rows)
    assert m["flores_en_th"]["language_consistency"] == pytest.approx(expected)
