"""Speculative decoding against the target alone and against `transformers` (fp32, tiny random Qwen2 models).

The target is a block-expanded model (2 → 4 layers) whose inserted layers were then perturbed, as continual
pre-training would: its self draft (the inserted layers skipped) is then exactly the 2-layer base model, which
`transformers`' assisted generation takes as its assistant, and it agrees with the target often but not always, so
rows accept different counts. A separate 1-layer random model is a draft that almost never agrees."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from generate_helpers import FP32, expanded_target, hf_generate, hf_model, ours, prompts
from scipy import stats
from transformers import Qwen2ForCausalLM

from sailor2_jax.generate import speculative
from sailor2_jax.generate.engine import Generator
from sailor2_jax.generate.sampling import SamplingConfig
from sailor2_jax.generate.speculative import SpeculativeGenerator
from sailor2_jax.model.expand import expand_hf_dir
from sailor2_jax.model.hf import import_hf, read_hf_config


@pytest.fixture(scope="module")
def pair(ref, mesh1, tmp_path_factory):
    """(HF target, our target, HF base = its self draft) on one device."""
    hf_target, path = expanded_target(ref, tmp_path_factory.mktemp("spec"), noise=0.03)
    return hf_target, import_hf(path, mesh1, FP32), ref


@pytest.fixture(scope="module")
def self_gen(pair, mesh1):
    return SpeculativeGenerator(pair[1], mesh1, draft_tokens=4)


@pytest.fixture(scope="module")
def other_draft(mesh1, tmp_path_factory):
    return ours(hf_model(layers=1, seed=1), tmp_path_factory.mktemp("draft"), mesh1)


def _ids(results):
    return [[c.token_ids for c in completions] for completions in results]


def test_expansion_is_recorded_and_survives_transformers_and_export(pair, tmp_path):
    hf_target, model, _ = pair
    assert model.cfg.inserted_layers == [1, 3]  # 2 → 4: a copy after every layer
    assert hf_target.config.sailor2_inserted_layers == [1, 3]  # transformers keeps the key and writes it back
    from sailor2_jax.model.hf import export_hf
    export_hf(model, tmp_path / "exported")
    assert read_hf_config(tmp_path / "exported").inserted_layers == [1, 3]


def test_greedy_is_the_target_token_for_token(pair, self_gen, other_draft, mesh1):
    """Batched prompts of different lengths, eos ids that fall inside drafted blocks, both kinds of draft: the
    tokens are transformers' greedy tokens of the target, and rows advance by different counts per round."""
    hf_target, model, _ = pair
    ps = prompts((5, 11, 3, 8, 14))
    free = hf_generate(hf_target, ps, 20, (), do_sample=False)
    eos = (free[0][9], free[2][5])  # tokens some rows produce mid-way
    expected = hf_generate(hf_target, ps, 20, eos, do_sample=False)
    assert any(row[-1] in eos for row in expected) and any(len(row) == 20 for row in expected)

    self_draft = self_gen
    assert _ids(self_draft.generate(ps, max_new_tokens=20, eos_ids=eos)) == [[row] for row in expected]
    assert 0.2 < self_draft.stats["acceptance"] < 0.98  # agrees often, not always
    separate = SpeculativeGenerator(model, mesh1, other_draft, draft_tokens=3)
    got = separate.generate(ps, max_new_tokens=20, eos_ids=eos, batch_size=2)  # also batch 1 (the last prompt)
    assert _ids(got) == [[row] for row in expected]
    assert [r[0].finish_reason for r in got] == ["stop" if row[-1] in eos else "length" for row in expected]
    assert separate.stats["acceptance"] < self_draft.stats["acceptance"]

    # one round at a time: rows keep different numbers of tokens, and finishing the decode changes nothing
    state, advance = self_draft.start(ps, list(range(len(ps))), rows=8, samples=1, max_new=20,
                                      sampling=SamplingConfig(), seed=0, eos_ids=eos)
    state = advance(state, 2)
    lengths = np.asarray(state.length)[:len(ps)]
    assert len(set(lengths.tolist())) > 1 and lengths.max() > 2, lengths
    state = advance(state, 20)
    assert [c[0].token_ids for c in Generator.completions(state, len(ps), 1)] == expected


def test_equals_transformers_assisted_generation_at_batch_1(pair, self_gen):
    hf_target, _, hf_base = pair
    ps = prompts((7, 12), seed=3)
    expected = []
    for prompt in ps:
        with torch.no_grad():
            out = hf_target.generate(torch.tensor([prompt]), assistant_model=hf_base, do_sample=False,
                                     max_new_tokens=16, eos_token_id=None, pad_token_id=0, num_assistant_tokens=4,
                                     num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0)
        expected.append([out[0, len(prompt):].tolist()])
    assert _ids(self_gen.generate(ps, max_new_tokens=16, eos_ids=(), batch_size=1)) == expected


def test_vocab_mismatch_and_self_without_expansion_are_refused(model1, mesh1, self_gen):
    small = ours(hf_model(vocab=120, layers=1), __import__("tempfile").mkdtemp(), mesh1)
    with pytest.raises(ValueError, match="vocabulary mismatch.*120"):
        SpeculativeGenerator(model1, mesh1, small, tokenizer_size=150)
    with pytest.raises(ValueError, match="needs a block-expanded model"):
        SpeculativeGenerator(model1, mesh1)  # an HF model without sailor2_inserted_layers
    from tokenizers import Tokenizer

    from sailor2_jax.tokenizer import load_tokenizer as qwen_tokenizer
    tok = qwen_tokenizer()
    other = Tokenizer.from_str(tok.to_str())
    other.add_tokens(["<not-qwen>"])
    speculative.check_tokenizers(tok, qwen_tokenizer())
    with pytest.raises(ValueError, match="vocabulary mismatch.*tokenizer"):
        speculative.check_tokenizers(tok, other)
    with pytest.raises(ValueError, match="repetition penalty"):
        self_gen.generate([[3, 4]], sampling=SamplingConfig(repetition_penalty=1.2),
                                                      max_new_tokens=4)


# --- the sampled distribution --------------------------------------------------------------------------------------
SMALL_V = 8
DRAWS = 4000
CHI2_P_MIN = 1e-3  # the correct rule must pass at this level; the wrong rule below lands far under it
SAMPLING = SamplingConfig(temperature=0.7, top_k=6)


def _first_tokens_law(hf: Qwen2ForCausalLM, prompt: list[int], n: int) -> dict[tuple[int, ...], float]:
    """P(first n tokens) of the target under SAMPLING, from transformers' logits and logits warpers."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

    law = {(): 1.0}
    for _ in range(n):
        prefixes = list(law)
        ids = torch.tensor([prompt + list(p) for p in prefixes])
        with torch.no_grad():
            scores = hf(ids).logits[:, -1].float()
        scores = TopKLogitsWarper(SAMPLING.top_k)(ids, TemperatureLogitsWarper(SAMPLING.temperature)(ids, scores))
        probs = torch.softmax(scores, -1).numpy()
        law = {p + (t,): law[p] * probs[i, t] for i, p in enumerate(prefixes) for t in range(SMALL_V)
               if probs[i, t] > 0}
    return law


def _chi2_p(samples: list[list[int]], law: dict) -> float:
    counts = {}
    for s in samples:
        counts[tuple(s)] = counts.get(tuple(s), 0) + 1
    if not set(counts) <= set(law):
        return 0.0  # a token outside the target's top-k was drawn: impossible under the target
    cells = sorted(law, key=law.get, reverse=True)
    big = [c for c in cells if law[c] * len(samples) >= 5]  # pool the rare cells (expected count < 5) into one
    observed = [counts.get(c, 0) for c in big] + [len(samples) - sum(counts.get(c, 0) for c in big)]
    expected = [float(law[c]) * len(samples) for c in big]
    expected.append(max(len(samples) - sum(expected), 0.0))
    expected = np.asarray(expected) * len(samples) / sum(expected)  # (float32 probabilities: rounding)
    return stats.chisquare(observed, expected).pvalue


@pytest.fixture(scope="module")
def small_vocab(mesh1, tmp_path_factory):
    target = hf_model(vocab=SMALL_V, layers=2, seed=4)
    draft = hf_model(vocab=SMALL_V, layers=1, seed=5)
    tmp = tmp_path_factory.mktemp("small")
    return target, ours(target, tmp / "t", mesh1), ours(draft, tmp / "d", mesh1)


def test_sampled_tokens_follow_the_target_distribution(small_vocab, mesh1, monkeypatch):
    """The first three tokens of DRAWS seeded samples (γ = 2: the second and third come from drafted blocks) against
    the target's exact law: the chi-square p-value clears CHI2_P_MIN; always accepting the draft's tokens fails."""
    hf_target, target, draft = small_vocab
    prompt = [3, 5, 2, 7]
    law = _first_tokens_law(hf_target, prompt, 3)

    def draw(gen):
        out = gen.generate([prompt], sampling=SAMPLING, max_new_tokens=3, num_samples=DRAWS, eos_ids=(), seed=11)
        return [c.token_ids for c in out[0]]
    gen = SpeculativeGenerator(target, mesh1, draft, draft_tokens=2, tokenizer_size=SMALL_V)
    p_value = _chi2_p(draw(gen), law)
    assert 0.1 < gen.stats["acceptance"] < 0.9, gen.stats  # the draft's law differs from the target's
    assert p_value > CHI2_P_MIN, p_value
    monkeypatch.setattr(speculative, "accept_probability", lambda p, q: jnp.ones_like(p))  # a wrong rule
    wrong = SpeculativeGenerator(target, mesh1, draft, draft_tokens=2, tokenizer_size=SMALL_V)
    assert _chi2_p(draw(wrong), law) < CHI2_P_MIN * 1e-3


# --- the commands ----------------------------------------------------------------------------------------------------
def test_generate_and_chat_take_a_draft(tmp_path, monkeypatch, capsys):
    """`generate --draft-model self` on an expanded real-vocabulary model: transformers' greedy tokens, the
    acceptance reported (1.0: at step 0 the self draft is the model); `chat` streams through the draft too and
    reports its acceptance at the end; a model without the expansion record is refused in one line."""
    import io

    from generate_helpers import real_vocab_hf_dir

    from sailor2_jax.cli import main
    from sailor2_jax.tokenizer import load_tokenizer

    base = real_vocab_hf_dir(tmp_path / "base", seed=2)
    expand_hf_dir(base, tmp_path / "expanded", 4)
    hf = Qwen2ForCausalLM.from_pretrained(tmp_path / "expanded", dtype=torch.float32).eval()
    text = "The capital of Thailand is"
    src, out = tmp_path / "prompts.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"prompt": text}) + "\n")
    args = ["--input", str(src), "--output", str(out), "--dtype", "float32", "--max-new-tokens", "8",
            "--draft-model", "self", "--draft-tokens", "3"]
    assert main(["generate", "--model", str(tmp_path / "expanded"), *args]) == 0
    printed = capsys.readouterr().out
    assert "acceptance 1.000" in printed and "γ = 3" in printed
    ids = load_tokenizer().encode(text, add_special_tokens=False).ids
    expected = hf_generate(hf, [ids], 8, tuple(hf.generation_config.eos_token_id if isinstance(
        hf.generation_config.eos_token_id, list) else [hf.generation_config.eos_token_id]), do_sample=False)
    assert json.loads(out.read_text())["completions"][0]["token_ids"] == expected[0]

    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert main(["chat", "--model", str(tmp_path / "expanded"), "--dtype", "float32", "--max-new-tokens", "4",
                 "--draft-model", "self"]) == 0
    printed = capsys.readouterr()
    assert "assistant> " in printed.out
    assert "acceptance 1.000" in printed.err and "tokens per target step" in printed.err

    assert main(["generate", "--model", str(base), *args]) == 2
    assert "needs a block-expanded model" in capsys.readouterr().err
