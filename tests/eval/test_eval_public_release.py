"""`sailor2-jax eval-import` of each benchmark's public release (small files in its release format): every converted
task file is valid for its task in configs/eval/, its few-shot prompts render, and M3Exam's letter options (vi with
a Cyrillic "В", jv lower-case) score what the letters say."""

from __future__ import annotations

import json

import pytest

from sailor2_jax.cli import main
from sailor2_jax.eval import public_release as sailcompass
from sailor2_jax.eval.config import load_tasks
from sailor2_jax.eval.task_records import FewShot, read_records


def _sources(src):
    for split in ("dev", "devtest"):
        (src / "flores" / split).mkdir(parents=True)
        for lang, code in sailcompass.FLORES.items():
            (src / "flores" / split / f"{code}.{split}").write_text("".join(f"{lang} sentence {i}\n" for i in range(4)))
    for lang in ("id", "th", "vi"):
        (src / "xcopa" / lang).mkdir(parents=True)
        for split in ("val", "test"):
            (src / "xcopa" / lang / f"{split}.{lang}.jsonl").write_text("".join(json.dumps(
                {"premise": f"p{i}", "choice1": "a", "choice2": "b", "question": ["cause", "effect"][i % 2],
                 "label": i % 2, "idx": i}) + "\n" for i in range(4)) + "{broken\n")
    (src / "belebele").mkdir()
    for code in sailcompass.BELEBELE.values():
        (src / "belebele" / f"{code}.jsonl").write_text(json.dumps(
            {"flores_passage": "P", "question": "Q", **{f"mc_answer{k}": f"a{k}" for k in range(1, 5)},
             "correct_answer_num": "3"}) + "\n")
    (src / "m3exam").mkdir()
    options = {"thai": (["1. x", "2. y"], "๒"), "vietnamese": (["A. x", "\u0412. y"], "\u0412"),
               "javanese": (["a. x", "b. y"], "b")}
    for name in sailcompass.M3EXAM.values():
        for split in ("dev", "test"):
            (src / "m3exam" / f"{name}-questions-{split}.json").write_text(json.dumps(
                [{"question_text": f"q{i}", "background_description": [], "options": options[name][0],
                  "answer_text": options[name][1]} for i in range(4)]))
    squad = {"data": [{"paragraphs": [{"context": "C", "qas": [{"id": f"indonesian-{i}", "question": f"q{i}",
                                                                 "answers": [{"text": "t"}]} for i in range(60)]}]}]}
    (src / "tydiqa.json").write_text(json.dumps(squad))
    (src / "xquad").mkdir()
    for lang in ("th", "vi"):
        (src / "xquad" / f"xquad.{lang}.json").write_text(json.dumps(squad))


@pytest.mark.parametrize("tasks_name", ["flores", "xcopa", "belebele", "m3exam", "qa"])
def test_converted_files_fit_the_task_files(tmp_path, tasks_name, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _sources(src)
    for name, path in (("flores", "flores"), ("xcopa", "xcopa"), ("belebele", "belebele"), ("m3exam", "m3exam"),
                       ("tydiqa", "tydiqa.json"), ("xquad", "xquad")):
        assert main(["eval-import", name, "--src", str(src / path), "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err  # XCOPA's broken fifth lines: reported, skipped (4 records written per file)
    assert "test.th.jsonl:5:" in err and "val.vi.jsonl:5:" in err
    tasks = load_tasks(tasks_name, [f"data_dir={out}"])
    for task in tasks.tasks:
        records = read_records(task, tasks.path(task.data), report=False)
        assert records.kept and not records.skipped, task.name
        pool = read_records(task, tasks.path(task.fewshot_data), report=False).kept if task.num_fewshot else []
        prompt = FewShot(task, pool).prompt(records.kept[0], 0)
        assert prompt.count("\n\n") >= task.num_fewshot
    if tasks_name == "m3exam":
        from sailor2_jax.eval.metrics import postprocess, reference_texts, sentence_scores
        outputs = {"m3exam_th": " ๒. y", "m3exam_vi": " B. y", "m3exam_jv": " B"}
        for task in tasks.tasks:
            record = read_records(task, tasks.path(task.data), report=False).kept[0]
            assert reference_texts(task, record["references"]) == ["2" if task.name == "m3exam_th" else "B"]
            assert "\u0412" not in record["prompt"] and "b. y" not in record["prompt"]
            output = postprocess(task, outputs[task.name] + "\nnext")
            assert sentence_scores(task, output, reference_texts(task, record["references"]))["exact"] == 100
            for wrong in (" C", "", " Bahasa"):  # another letter, nothing, a word starting with the letter
                assert sentence_scores(task, postprocess(task, wrong), record["references"])["exact"] == 0
