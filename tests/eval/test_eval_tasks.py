"""`sailor2-jax eval`'s three task kinds on a tiny random model (fp32, 8 fake devices), each checked against an
outside reference: transformers' log-probs (perplexity with lm-eval's rolling windows, multiple choice), transformers'
greedy generate (generation), sacrebleu's command line (chrF++, BLEU); malformed records are reported and skipped."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from eval_helpers import hf_logprobs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from sailor2_jax.tokenizer import EOS_ID
from sailor2_jax.eval.config import load_tasks
from sailor2_jax.eval.run import Evaluator

TEXTS = [("The right to education shall be free, at least in the elementary stages.", "en"),
         ("Mọi người đều có quyền tự do ngôn luận và bày tỏ quan điểm.", "vi"),
         ("ทุกคนมีสิทธิในเสรีภาพแห่งความคิดเห็นและการแสดงออก", "th"),
         ("Setiap orang berhak atas kebebasan mempunyai dan mengeluarkan pendapat. " * 3, "id")]
MC = [{"context": "The capital of France is", "choices": [" Paris.", " Berlin, a city.", " ที่นี่"], "gold": 0,
       "language": "en"},
      {"context": "Hà Nội là thủ đô của ", "choices": ["Việt Nam", "Thái Lan"], "gold": 1, "language": "vi"},
      {"context": "", "choices": ["abc", "hello world"], "gold": 1}]
SHOTS = [{"context": "Sky:", "choices": [" blue", " green"], "gold": 0, "language": "en"},
         {"context": "Grass:", "choices": [" blue", " green"], "gold": 1, "language": "en"}]
GEN = [{"prompt": "Translate: cat", "references": ["mèo"], "language": "en-vi"},
       {"prompt": "Dịch: chó", "references": ["dog", "a dog"], "language": "vi-en"},
       {"prompt": "Q: 2+2?", "references": ["4"]}]
MAX_NEW = 12


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def evaluated(loaded, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_tasks")
    _jsonl(d / "ppl.jsonl", [{"text": t, "language": lang} for t, lang in TEXTS])
    # lines 2, 4, 5, 6 are malformed: reported with their line, skipped, the rest scored
    _jsonl(d / "mc.jsonl", [MC[0], "{not json", MC[1], {"context": "x", "choices": ["a", "b"], "gold": 2},
                            {"context": "x", "choices": ["a"], "gold": 0}, [1, 2], MC[2]])
    _jsonl(d / "shots.jsonl", SHOTS)
    _jsonl(d / "gen.jsonl", GEN)
    (d / "tasks.yaml").write_text(f"""
data_dir: {d}
max_length: 16
batch_size: 4
tasks:
  - {{name: ppl, type: perplexity, data: ppl.jsonl}}
  - {{name: ppl_long, type: perplexity, data: ppl.jsonl, limit: 2}}
  - {{name: mc, type: multiple_choice, data: mc.jsonl}}
  - name: mc_fewshot
    type: multiple_choice
    data: mc.jsonl
    limit: 1
    num_fewshot: 2
    fewshot_data: shots.jsonl
    template: "Q: {{context}}"
    choice_template: " A:{{choice}}"
  - {{name: gen, type: generation, data: gen.jsonl, max_new_tokens: {MAX_NEW}, until: ["ing"],
      metrics: [chrf++, bleu, exact_match, f1]}}
""")
    tasks = load_tasks(d / "tasks.yaml")
    long = tasks.replace(max_length=512, tasks=[t for t in tasks.tasks if t.name == "ppl_long"])
    short = tasks.replace(tasks=[t for t in tasks.tasks if t.name != "ppl_long"])
    out = d / "out"
    summary = Evaluator(loaded, short).run(out, "tiny")
    summary_long = Evaluator(loaded, long).run(d / "out_long", "tiny")
    rows = {name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
            for name in summary["tasks"]}
    rows["ppl_long"] = [json.loads(line) for line in (d / "out_long" / "ppl_long.jsonl").read_text().splitlines()]
    return d, summary, summary_long, rows


def test_results_files(evaluated):
    d, summary, _, rows = evaluated
    written = json.loads((d / "out" / "results.json").read_text())
    assert written == summary and written["model"] == "tiny" and written["time"]
    assert set(written["tasks"]) == {"ppl", "mc", "mc_fewshot", "gen"}
    assert written["records"]["mc"] == {"read": 7, "scored": 3, "skipped": 4}
    assert [len(rows[n]) for n in ("ppl", "mc", "gen")] == [4, 3, 3]


def test_malformed_records_reported_with_line(tmp_path, capsys):
    from sailor2_jax.eval.config import MultipleChoiceTask
    from sailor2_jax.eval.task_records import read_records
    path = _jsonl(tmp_path / "mc.jsonl", [MC[0], "{not json", {"context": "x", "choices": ["a", "b"], "gold": 2},
                                          {"context": 1, "choices": ["a", "b"], "gold": 0}])
    got = read_records(MultipleChoiceTask(name="m", type="multiple_choice", data=str(path)), path)
    err = capsys.readouterr().err
    assert [line for line, _ in got.skipped] == [2, 3, 4] and len(got.kept) == 1 and got.read == 4
    assert f"{path}:2: not valid JSON" in err
    assert f"{path}:3: `gold` must be an index into the 2 choices, got 2; record skipped" in err
    assert f"{path}:4: `context` must be a string" in err


def _rolling_reference(model, tok, text, max_length):
    """lm-eval's rolling windows (its own code) scored by transformers."""
    ids = tok(text, add_special_tokens=False).input_ids
    total = 0.0
    for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(ids, EOS_ID, max_length, 1)):
        full = (ctx + pred)[-(max_length + 1):]
        total += hf_logprobs(model, full)[-len(pred):].sum()
    return -total, len(ids)


@pytest.mark.parametrize("name,max_length", [("ppl", 16), ("ppl_long", 512)])
def test_perplexity_matches_transformers(evaluated, reference, name, max_length):
    _, summary, summary_long, rows = evaluated
    model, tok = reference
    nll_total = tokens_total = bytes_total = 0.0
    for row, (text, lang) in zip(rows[name], TEXTS):
        nll, n = _rolling_reference(model, tok, text, max_length)
        assert row["tokens"] == n and row["bytes"] == len(text.encode())
        assert row["nll"] == pytest.approx(nll, rel=1e-4)
        if max_length == 512:  # one window: the whole document after <|endoftext|>, as transformers scores it
            whole = -hf_logprobs(model, [EOS_ID] + tok(text).input_ids).sum()
            assert row["nll"] == pytest.approx(whole, rel=1e-4)
        nll_total, tokens_total, bytes_total = nll_total + nll, tokens_total + n, bytes_total + len(text.encode())
        metrics = (summary if name == "ppl" else summary_long)["tasks"][name]
        assert metrics[f"ppl/{lang}"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert metrics["ppl"] == pytest.approx(math.exp(nll_total / tokens_total), rel=1e-4)
    assert metrics["bpb"] == pytest.approx(nll_total / bytes_total / math.log(2), rel=1e-4)
    if name == "ppl":
        assert any(r["tokens"] > 16 for r in rows[name])  # the rolling windows were exercised


def _mc_reference(model, tok, context, choices, max_length=16):
    """lm-eval's loglikelihood encoding (trailing space moved, ids of the joined string, the left end cut to
    max_length + 1 ids) scored by transformers."""
    out = []
    for choice in choices:
        n_spaces = len(context) - len(context.rstrip())
        ctx, cont = (context[:-n_spaces], context[-n_spaces:] + choice) if n_spaces else (context, choice)
        ctx_ids = tok(ctx, add_special_tokens=False).input_ids or [EOS_ID]
        whole = tok(ctx + cont, add_special_tokens=False).input_ids
        cont_ids = whole[len(tok(ctx, add_special_tokens=False).input_ids):]
        full = (ctx_ids + cont_ids)[-(max_length + 1):]
        out.append(float(hf_logprobs(model, full)[-len(cont_ids):].sum()))
    return out


def test_multiple_choice_matches_transformers(evaluated, reference):
    _, summary, _, rows = evaluated
    model, tok = reference
    for row, record in zip(rows["mc"], [MC[0], MC[1], MC[2]]):
        ref = _mc_reference(model, tok, record["context"], record["choices"])
        np.testing.assert_allclose(row["logliks"], ref, rtol=1e-4)
        assert row["pred"] == int(np.argmax(ref)) and row["gold"] == record["gold"]
        per_byte = np.array(ref) / [len(c.encode()) for c in record["choices"]]
        assert row["pred_norm"] == int(np.argmax(per_byte))
    acc = 100 * np.mean([r["pred"] == r["gold"] for r in rows["mc"]])
    assert summary["tasks"]["mc"]["acc"] == pytest.approx(acc)
    # few-shot: two examples (both of the pool, in a seeded order) before the templated query
    row = rows["mc_fewshot"][0]
    shots = {"Q: Sky: A: blue", "Q: Grass: A: green"}
    ref = None
    for order in (list(shots), list(shots)[::-1]):
        context = "\n\n".join([*order, "Q: " + MC[0]["context"]])
        candidate = _mc_reference(model, tok, context, [" A:" + c for c in MC[0]["choices"]])
        if np.allclose(row["logliks"], candidate, rtol=1e-4):
            ref = candidate
    assert ref is not None, "the few-shot prompt is not the two examples and the query"


def test_generation_is_greedy_with_stop_strings(evaluated, reference):
    _, summary, _, rows = evaluated
    model, tok = reference
    for row, record in zip(rows["gen"], GEN):
        # the prompt keeps its last max_length - max_new_tokens ids (16 - 12 here: some prompts are cut)
        ids = tok(record["prompt"], add_special_tokens=False).input_ids[-(16 - MAX_NEW):]
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                                 eos_token_id=EOS_ID, pad_token_id=EOS_ID)[0, len(ids):].tolist()
        if EOS_ID in out:
            out = out[:out.index(EOS_ID)]
        raw = tok.decode(out)
        assert row["raw_output"] == raw
        assert row["output"] == raw.split("ing")[0].strip()


def test_chrf_and_bleu_equal_sacrebleu_cli(evaluated, tmp_path):
    _, summary, _, rows = evaluated
    metrics = summary["tasks"]["gen"]
    # fixed outputs too, so the comparison does not rest on a random model's strings
    outputs = [r["output"] for r in rows["gen"]] + ["the cat sat on the mat", "mèo đen"]
    refs = [r["references"] for r in rows["gen"]] + [["a cat sat on the mat", "the cat is on a mat"], ["con mèo"]]
    from sailor2_jax.eval.config import GenerationTask
    from sailor2_jax.eval.metrics import corpus_scores, sentence_scores
    task = GenerationTask(name="g", type="generation", data="x", metrics=["chrf++", "bleu", "chrf"])
    ours = corpus_scores(task, outputs, refs, [sentence_scores(task, o, r) for o, r in zip(outputs, refs)])
    (tmp_path / "hyp.txt").write_text("\n".join(outputs) + "\n")
    ref_files = []
    for k in range(2):  # sacrebleu's CLI takes one file per reference stream; a missing reference is an empty line
        ref_files.append(tmp_path / f"ref{k}.txt")
        ref_files[-1].write_text("\n".join(r[k] if k < len(r) else "" for r in refs) + "\n")

    def cli(*flags):
        out = subprocess.run([sys.executable, "-m", "sacrebleu", *map(str, ref_files), "-i", str(tmp_path / "hyp.txt"),
                              "-b", "-w", "4", *flags], capture_output=True, text=True, check=True).stdout
        return float(out.strip())
    assert ours["chrf++"] == pytest.approx(cli("-m", "chrf", "--chrf-word-order", "2"), abs=1e-4)
    assert ours["chrf"] == pytest.approx(cli("-m", "chrf"), abs=1e-4)
    assert ours["bleu"] == pytest.approx(cli("-m", "bleu"), abs=1e-4)
    # the evaluator's own corpus scores over its records, against the CLI on those records
    outputs, refs = outputs[:3], refs[:3]
    (tmp_path / "hyp.txt").write_text("\n".join(outputs) + "\n")
    for k in range(2):
        ref_files[k].write_text("\n".join(r[k] if k < len(r) else "" for r in refs) + "\n")
    assert metrics["chrf++"] == pytest.approx(cli("-m", "chrf", "--chrf-word-order", "2"), abs=1e-4)
    assert metrics["bleu"] == pytest.approx(cli("-m", "bleu"), abs=1e-4)


def test_exact_match_and_f1_as_squad():
    from sailor2_jax.eval.metrics import exact_match, token_f1
    assert exact_match("The Dog.", ["dog", "a cat"]) == 100.0
    assert exact_match("dogs", ["dog"]) == 0.0
    # "the black dog" vs "a black cat": normalized "black dog" vs "black cat": 1 common, P = R = 1/2
    assert token_f1("the black dog", ["a black cat", "fish"]) == pytest.approx(50.0)
    assert token_f1("", ["x"]) == 0.0
