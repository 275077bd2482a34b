"""SailCompass' protocol against OpenCompass' own code (opencompass 0.2.2 in `.venv-opencompass`, built by `make
opencompass-venv`; its compared modules equal those of 001e77f, the commit SailCompass pins), run in a subprocess
(tests/eval/opencompass_reference.py) on a stand-in SailCompass checkout and data of ours in SailCompass' formats
(tests/eval/sailcompass_fixture.py): letter-option M3Exam vi/jv (a Cyrillic "В", lower-case letters), Thai-digit
M3Exam th, Thai QA, TyDi QA, Thai FLORES, XCOPA th / Belebele th / M3Exam vi as PPL choices.

- every generation prompt `eval-import sailcompass` writes equals OpenCompass' GenInferencer prompt, character for
  character; every choice task's context + choice equals the prompt its PPLInferencer scores for that label;
- our `ppl_sc` values equal HuggingFaceCausalLM._get_ppl's on the same tiny model (fp32, two programs: rtol 1e-4),
  and the choices (lowest wins) are the same;
- with SAILCOMPASS_SRC naming a SailCompass checkout (it has no licence and is on no package registry, so only a
  user can supply it), SailCompass' own evaluators score fixed predictions (Thai QA with partial credit, vi/jv
  letter options, Thai digits, Thai FLORES) as ours do, within 1e-6, and all of its configs render as OpenCompass
  renders them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sailcompass_fixture import write_checkout, write_data

REPO = Path(__file__).parents[2]
VENV_PY = REPO / ".venv-opencompass" / "bin" / "python"
STAMP = REPO / ".venv-opencompass" / ".installed"
SCRIPT = Path(__file__).parent / "opencompass_reference.py"
pytestmark = pytest.mark.skipif(not STAMP.is_file(), reason=f"{STAMP} absent: build it with `make "
                                "opencompass-venv` (OpenCompass' pins conflict with the project's lock)")


def reference(request: dict, tmp: Path) -> dict:
    """OpenCompass' (and SailCompass') answer to a request, computed in .venv-opencompass."""
    done = subprocess.run([str(VENV_PY), str(SCRIPT)], input=json.dumps({**request, "output": str(tmp / "answer.json")},
                                                                     ensure_ascii=False),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp / "answer.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from sailor2_jax.eval.sailcompass import Source, import_sailcompass, load_entries, task_name
    from sailor2_jax.eval.sailcompass_source import read_dataset_configs

    d = tmp_path_factory.mktemp("opencompass")
    checkout, data = write_checkout(d / "sailcompass"), write_data(d / "data")
    import_sailcompass(checkout, data, d / "out")
    source = Source.read(checkout)
    configs = [c for f in sorted((checkout / "configs" / "datasets").glob("**/*.py")) for c in
               read_dataset_configs(f)]
    records = {task_name(c): [json.loads(x) for x in (d / "out" / "data" / f"{task_name(c)}.jsonl").read_text()
                              .splitlines()] for c in configs}
    entries = {task_name(c): [e for _, e in load_entries(c, source, data)] for c in configs}
    return d, configs, records, entries


def test_prompts_and_ppl_choices_equal_opencompass(imported, hf_dir, loaded):
    from sailor2_jax.eval.config import load_tasks
    from sailor2_jax.eval.run import Evaluator
    from sailor2_jax.eval.sailcompass import task_name

    d, configs, records, entries = imported
    max_len = 512
    answer = reference({"model": str(hf_dir), "max_seq_len": max_len,
                        "datasets": [{"config": str(c.file), "entries": entries[task_name(c)]} for c in configs]}, d)
    choice_tasks = [task_name(c) for c in configs if c.labelled]
    assert len(choice_tasks) == 3 and len(configs) == 9
    tasks = load_tasks(d / "out" / "sailcompass.yaml", [f"max_length={max_len}", "batch_size=4"], choice_tasks)
    summary = Evaluator(loaded, tasks).run(d / "run", "tiny")
    decided = 0
    for cfg, ref in zip(configs, answer["datasets"]):
        name = task_name(cfg)
        assert len(records[name]) == len(entries[name]) > 0, name
        if not cfg.labelled:
            assert [r["prompt"] for r in records[name]] == ref["prompts"], name
            continue
        assert ref["labels"] == records[name][0]["labels"]
        rows = [json.loads(x) for x in (d / "run" / f"{name}.jsonl").read_text().splitlines()]
        before = decided
        for record, row, prompts, ppl, pred in zip(records[name], rows, ref["prompts"], ref["ppl"],
                                                   ref["predictions"]):
            assert [record["context"] + c for c in record["choices"]] == prompts, name
            np.testing.assert_allclose(row["ppl_sc"], ppl, rtol=1e-4)
            low, second = sorted(ppl)[:2]
            if second - low > 3e-4 * low:  # decided by more than the tolerance
                assert record["labels"][row["pred_ppl_sc"]] == pred
                decided += 1
        expected = 100.0 * np.mean([r["labels"][r["gold"]] == p for r, p in zip(records[name], ref["predictions"])])
        if decided - before == len(rows):  # every choice decided: the task's score is OpenCompass' too
            assert summary["tasks"][name]["ppl_sc"] == pytest.approx(expected)
    assert decided >= 3


def test_loaders_repair_m3exam_letters(imported):
    _, _, records, entries = imported
    # vi: the Cyrillic "В" answer and option letter are a Latin B; "C. . 7" loses the stray dot in options_2 (and
    # keeps the space after it, as SailCompass' loader does)
    assert [r["references"] for r in records["m3exam_vi"]] == [["B"], ["B"]]
    assert "\nB. Hà Nội\n" in records["m3exam_vi"][0]["prompt"] and "\u0412" not in records["m3exam_vi"][0]["prompt"]
    assert entries["m3exam_vi"][1]["options_2"] == " 7" and entries["m3exam_vi_ppl4"][1]["options_2"] == "Tím"
    # jv: letters upper-cased, the question's trailing " …" stripped
    assert [r["references"] for r in records["m3exam_jv"]] == [["A"], ["B"]]
    assert "yaiku\nA. Semarang\nB. Surabaya" in records["m3exam_jv"][0]["prompt"]
    # th: a Thai-digit answer as a digit
    assert [r["references"] for r in records["m3exam_th"]] == [["2"], ["2"]]


SAILCOMPASS_SRC = os.environ.get("SAILCOMPASS_SRC")


@pytest.mark.skipif(not SAILCOMPASS_SRC, reason="SAILCOMPASS_SRC (a sail-sg/sailcompass checkout) not set: "
                    "SailCompass has no licence and is on no package registry, so its evaluators cannot be installed "
                    "here")
def test_metrics_equal_sailcompass_evaluators(tmp_path):
    from sailor2_jax.eval.config import GenerationTask
    from sailor2_jax.eval.metrics import corpus_scores, sentence_scores
    from sailor2_jax.eval.sailcompass import THAI_DIGITS, Source
    from sailor2_jax.eval.sailcompass_metrics import SailCompassScoring
    from sailor2_jax.eval.sailcompass_source import evaluator_labels
    from sailor2_jax.post.verifier import LanguageVerifier

    root = Path(SAILCOMPASS_SRC)
    source, verifier = Source.read(root), LanguageVerifier()
    is_thai = lambda t: verifier.identify(t) == "th"
    labels = SailCompassScoring(answer_labels=source.answer_labels)
    cases = {
        # Thai QA: exact, partial credit on Thai words, label stripped, punctuation, an English answer
        "AnsEvaluator": (["กรุงเทพมหานคร", "คำตอบ: เมืองหลวงกรุงเทพ\nต่อ", " ช้างป่า.", "Bangkok city", ""],
                         ["กรุงเทพมหานคร", "กรุงเทพมหานคร", "ช้าง", "bangkok", "ปลา"], ["em_sc", "f1_sc"], labels),
        "TydiqaIdEvaluator": (["Jawaban: kota Jakarta.", "ibu kota"], [["Jakarta", "kota Jakarta"], ["Bandung"]],
                              ["em_tydiqa", "f1_tydiqa"], labels),
        "TextGenEvaluator": (["แมวนอนหลับอยู่\nx", "ไทย: ฉันชอบกินข้าว", "The Cat sleeps ."],
                             ["แมวนอนหลับ", "ฉันชอบข้าว", "The cat sleeps."], ["bleu_sc", "chrf++_sc"], labels),
        "M3examEmEvaluator": ([" B", "Câu hỏi: x\nA", " b. Hà Nội", "Jawaban D", ""], ["B", "A", "B", "D", "C"],
                              ["option_sc"], SailCompassScoring(
                                  options="ABCD", option_labels=evaluator_labels(root, "m3exam", "M3examEmEvaluator"),
                                  option_patterns=source.option_patterns)),
        "M3examThEvaluator": ([" ๒", " 3. x", " B", "ข้อ ๔"], ["2", "3", "2", "4"], ["option_sc"], SailCompassScoring(
            options="12345๑๒๓๔๕ABCD", option_patterns=source.option_patterns,
            option_map={**THAI_DIGITS, **{v: k for k, v in THAI_DIGITS.items()}, **dict(zip("ABCDE", "12345"))})),
        "BelebeleEvaluator": ([" D", "2", "Answer: C"], ["D", "B", "A"], ["option_sc"], SailCompassScoring(
            options="ABCD", option_labels=evaluator_labels(root, "belebele", "BelebeleEvaluator"),
            option_patterns=source.option_patterns, option_map=dict(zip("1234", "ABCD")))),
    }
    answer = reference({"sailcompass": str(root), "evaluations": [
        {"evaluator": name, "predictions": preds, "references": refs}
        for name, (preds, refs, _, _) in cases.items()]}, tmp_path)
    names = {"em_sc": "EM", "f1_sc": "F1", "em_tydiqa": "EM", "f1_tydiqa": "F1", "bleu_sc": "BLEU",
             "chrf++_sc": "Chrf++", "option_sc": "EM"}
    for (name, (preds, refs, metrics, scoring)), theirs in zip(cases.items(), answer["evaluations"]):
        refs = [r if isinstance(r, list) else [r] for r in refs]
        task = GenerationTask(name="t", type="generation", data="x", metrics=metrics, sailcompass=scoring)
        ours = corpus_scores(task, preds, refs, [sentence_scores(task, p, r, is_thai) for p, r in zip(preds, refs)])
        for metric in metrics:
            # AnsEvaluator leaves F1 out when it equals EM
            expected = theirs.get(names[metric], theirs["EM"] if metric == "f1_sc" else None)
            assert ours[metric] == pytest.approx(expected, abs=1e-6), (name, metric, ours, theirs)


def _synthetic_data(configs, data: Path) -> None:
    """One record per data file, in SailCompass' formats, with every field its configs read."""
    for c in configs:
        path = data / c.path.removeprefix("./data/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if c.dataset_type.startswith("M3EXAM"):
            n = int(path.stem.rsplit("-", 1)[1]) if path.stem.rsplit("-", 1)[1].isdigit() else 4
            letters = {"M3EXAMTHDataset": "12345", "M3EXAMJvDataset": "abcde"}.get(c.dataset_type, "AB\u0412DE")
            answer = "\u0e52" if c.dataset_type == "M3EXAMTHDataset" else letters[2 if "VI" in c.dataset_type else 1]
            path.write_text(json.dumps([{"question_text": "Câu {x} hỏi …", "answer_text": answer,
                                         "options": [f"{letters[i]}. opt{i}" for i in range(n)]}]))
        elif c.dataset_type == "XCOPASDataset":
            path.write_text(json.dumps({"premise": "p", "choice1": "a", "choice2": "b", "question": "effect",
                                        "label": 1}) + "\n")
        elif c.dataset_type == "BelebeleDataset":
            path.write_text(json.dumps({"flores_passage": "fp {question}", "question": "q", "correct_answer_num": "3",
                                        **{f"mc_answer{k}": f"a{k}" for k in range(1, 5)}}) + "\n")
        else:
            row = json.loads(path.read_text().splitlines()[0]) if path.exists() else {}
            row |= {k: f"{k} text" for k in c.input_columns}
            row[c.output_column] = (str(list(c.template)[-1]) if c.labelled else
                                    ["ans"] if c.dataset_type == "TydiqaIdDataset" else "ans")
            path.write_text(json.dumps(row, ensure_ascii=False) + "\n")


@pytest.mark.skipif(not SAILCOMPASS_SRC, reason="SAILCOMPASS_SRC (a sail-sg/sailcompass checkout) not set: its "
                    "configs are unlicensed and on no package registry")
def test_every_sailcompass_config_renders_as_opencompass(tmp_path, hf_dir):
    """All of SailCompass' own configs (38 at 6093e6c), on one synthetic record each: our prompts and choice splits
    equal OpenCompass' (the checkout's configs run in the reference venv)."""
    from sailor2_jax.eval.sailcompass import Source, import_sailcompass, load_entries, task_name
    from sailor2_jax.eval.sailcompass_source import read_dataset_configs

    root = Path(SAILCOMPASS_SRC)
    configs = [c for f in sorted((root / "configs" / "datasets").glob("**/*.py")) for c in read_dataset_configs(f)]
    _synthetic_data(configs, tmp_path / "data")
    counts = import_sailcompass(root, tmp_path / "data", tmp_path / "out")
    assert all(c["written"] == 1 and not c["rejected"] for c in counts.values()), counts
    source = Source.read(root)
    answer = reference({"model": str(hf_dir), "max_seq_len": 4096, "datasets": [
        {"config": str(c.file), "entries": [e for _, e in load_entries(c, source, tmp_path / "data")]}
        for c in configs]}, tmp_path)
    for c, ref in zip(configs, answer["datasets"]):
        records = [json.loads(x) for x in (tmp_path / "out" / "data" / f"{task_name(c)}.jsonl").read_text()
                   .splitlines()]
        if c.labelled:
            assert ref["labels"] == records[0]["labels"], task_name(c)
            assert [[r["context"] + x for x in r["choices"]] for r in records] == ref["prompts"], task_name(c)
        else:
            assert [r["prompt"] for r in records] == ref["prompts"], task_name(c)
