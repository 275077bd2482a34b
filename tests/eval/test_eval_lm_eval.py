"""The lm-eval bridge: lm-eval's own harness runs local tasks (multiple choice, rolling log-likelihood, generation)
on our `sailor2_jax` model and on its `hf` model over the same tiny random directory; the per-request results agree."""

from __future__ import annotations

import json

import pytest

lm_eval = pytest.importorskip("lm_eval")

DOCS = [{"context": "The capital of France is", "choices": [" Paris", " Berlin", " ที่นี่"], "gold": 0,
         "text": "Everyone has the right to life, liberty and security of person."},
        {"context": "Hà Nội là thủ đô của", "choices": [" Việt Nam", " Thái Lan"], "gold": 1,
         "text": "ทุกคนมีสิทธิในการดำรงชีวิต เสรีภาพ และความมั่นคงแห่งบุคคล " * 4},
        # longer than the scorer's LM-head window (16 positions: the longest choice rounded up), so the scored
        # tokens sit in a window that starts past the row's beginning
        {"context": "Answer with the number only, in digits, and nothing else at all. Q: 2+2=",
         "choices": ["4", "5", "22"], "gold": 0, "text": "Mọi người đều có quyền sống."}]

TASKS = """
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
"""


def _tasks(d):
    data = d / "docs.jsonl"
    data.write_text("".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in DOCS), encoding="utf-8")
    (d / "tiny_mc.yaml").write_text(TASKS.format(name="tiny_mc", data=data) + """
output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
metric_list: [{metric: acc}, {metric: acc_norm}]
""")
    (d / "tiny_rolling.yaml").write_text(TASKS.format(name="tiny_rolling", data=data) + """
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list: [{metric: word_perplexity}, {metric: bits_per_byte}]
""")
    (d / "tiny_gen.yaml").write_text(TASKS.format(name="tiny_gen", data=data) + """
output_type: generate_until
doc_to_text: "{{context}}"
doc_to_target: "{{choices[gold]}}"
generation_kwargs: {until: ["ing"], max_gen_toks: 10, do_sample: false}
metric_list: [{metric: exact_match}]
""")
    return d


def test_bridge_equals_lm_eval_hf(hf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import sailor2_jax.eval.lm_eval_model  # noqa: F401  registers `sailor2_jax`
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(_tasks(tmp_path)))
    names = ["tiny_mc", "tiny_rolling", "tiny_gen"]

    # max_length 24 < the longest rolling document: several windows
    def run(model, args):
        return lm_eval.simple_evaluate(model=model, model_args=args, tasks=names, task_manager=manager,
                                       log_samples=True, batch_size=4, bootstrap_iters=0)
    ours = run("sailor2_jax", f"path={hf_dir},dtype=float32,max_length=24")
    ref = run("hf", f"pretrained={hf_dir},dtype=float32,max_length=24,device=cpu")
    for name in names:
        a, b = ours["samples"][name], ref["samples"][name]
        assert len(a) == len(b) == len(DOCS)
        for sa, sb in zip(a, b):
            assert sa["doc_id"] == sb["doc_id"]
            for ra, rb in zip(sa["resps"], sb["resps"]):
                if name == "tiny_gen":
                    assert ra == rb
                elif name == "tiny_rolling":
                    assert ra[0] == pytest.approx(rb[0], rel=1e-4)
                else:
                    (lla, greedy_a), (llb, greedy_b) = ra[0], rb[0]
                    assert lla == pytest.approx(llb, rel=1e-4) and greedy_a == greedy_b
        for metric, value in ref["results"][name].items():
            if isinstance(value, float) and "stderr" not in metric:
                assert ours["results"][name][metric] == pytest.approx(value, rel=1e-4), (name, metric)


@pytest.mark.slow
def test_lm_eval_command_line(hf_dir, tmp_path):
    """The documented command: lm-eval's CLI with `sailor2_jax` registered, on a local task, on a 2x2x2 mesh."""
    import os
    import subprocess
    import sys
    _tasks(tmp_path)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "sailor2_jax.eval.lm_eval_model", "--model", "sailor2_jax",
                           "--model_args", f"path={hf_dir},dtype=float32,max_length=24,mesh=2x2x2",
                           "--tasks", "tiny_mc", "--include_path", str(tmp_path), "--output_path",
                           str(tmp_path / "out"), "--batch_size", "4"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results*.json")]
    assert results and "acc,none" in results[0]["results"]["tiny_mc"]
    assert results[0]["config"]["model"] == "sailor2_jax"
