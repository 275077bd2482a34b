"""LlamaPro expansion: positions, identity at step 0 (measured with transformers), HF-dir and in-memory paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_helpers import hf_logits, hf_model, run_model, tokens
from flax import nnx
from transformers import Qwen2ForCausalLM

from sailor2_jax.config import ComputeConfig
from sailor2_jax.model.expand import expand_hf_dir, expand_model, expansion_plan
from sailor2_jax.model.hf import import_hf

FP32 = ComputeConfig(dtype="float32")


def test_expansion_positions_of_the_sailor2_models():
    src, new = expansion_plan(24, 48)
    assert [i for i, n in enumerate(new) if n] == list(range(1, 48, 2))
    assert src == [i // 2 for i in range(48)]
    _, new = expansion_plan(28, 32)
    assert [i for i, n in enumerate(new) if n] == [7, 15, 23, 31]
    src, new = expansion_plan(48, 64)
    assert [i for i, n in enumerate(new) if n] == list(range(3, 64, 4))
    assert src[3] == 2 and src[63] == 47
    with pytest.raises(ValueError, match="does not divide"):
        expansion_plan(28, 33)
    with pytest.raises(ValueError, match="must add layers"):
        expansion_plan(28, 28)


@pytest.mark.parametrize("untie", [False, True])
def test_expanded_hf_directory_keeps_the_base_logits(untie, save_hf, tmp_path):
    base = hf_model(tied=True, layers=4)
    out = tmp_path / "expanded"
    summary = expand_hf_dir(save_hf(base), out, 6, untie=untie)
    model, info = Qwen2ForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.num_hidden_layers == 6 and model.config.tie_word_embeddings == (not untie)
    assert summary["is_new_layer"] == [False, False, True, False, False, True]
    assert json.loads((out / "sailor2_expansion.json").read_text())["is_new_layer"] == summary["is_new_layer"]
    x = tokens()
    np.testing.assert_allclose(hf_logits(model.eval(), x), hf_logits(base, x), rtol=1e-5, atol=1e-5)
    new_layer = model.model.layers[2]
    assert float(new_layer.self_attn.o_proj.weight.detach().abs().sum()) == 0.0
    assert float(new_layer.mlp.down_proj.weight.detach().abs().sum()) == 0.0
    # the inserted layer copies the preceding original one (its q/k/v, MLP and norms)
    np.testing.assert_array_equal(new_layer.self_attn.q_proj.bias.detach().numpy(),
                                  base.model.layers[1].self_attn.q_proj.bias.detach().numpy())
    if untie:
        np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(),
                                      model.model.embed_tokens.weight.detach().numpy())


def test_vocabulary_resize_keeps_the_kept_rows(save_hf, tmp_path):
    base = hf_model(tied=False, layers=2, vocab=320)
    out = tmp_path / "resized"
    expand_hf_dir(save_hf(base), out, 4, vocab_size=300)
    model = Qwen2ForCausalLM.from_pretrained(out).eval()
    assert model.config.vocab_size == 300
    x = tokens(vocab=300)
    np.testing.assert_allclose(hf_logits(model, x), hf_logits(base, x)[..., :300], rtol=1e-5, atol=1e-5)


def test_in_memory_expansion_matches_the_directory_path(save_hf, mesh8, tmp_path):
    base = hf_model(tied=True, layers=4)
    src = save_hf(base)
    model = import_hf(src, mesh8, FP32)
    expanded, is_new = expand_model(model, 8, mesh8, untie=True)
    assert is_new == [False, True] * 4
    assert expanded.cfg.num_layers == 8 and not expanded.cfg.tie_embeddings
    assert expanded.layers.q[...].sharding.spec == model.layers.q[...].sharding.spec
    x = tokens()
    np.testing.assert_allclose(run_model(expanded, mesh8, x), hf_logits(base, x), rtol=1e-4, atol=1e-4)
    expand_hf_dir(src, tmp_path / "dir", 8, untie=True)
    from_dir = import_hf(tmp_path / "dir", mesh8, FP32)
    a = {p: v[...] for p, v in nnx.to_flat_state(nnx.state(expanded, nnx.Param))}
    b = {p: v[...] for p, v in nnx.to_flat_state(nnx.state(from_dir, nnx.Param))}
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=str(k))


def test_expansion_carries_the_base_generation_config_and_eos_list(save_hf, tmp_path):
    """A chat base stops on two ids: config.json and generation_config.json of the expansion keep the list."""
    from transformers import GenerationConfig

    base = hf_model(tied=True, layers=2)
    base.config.eos_token_id = [1, 2]
    base.generation_config = GenerationConfig(eos_token_id=[1, 2], pad_token_id=1, temperature=0.7, do_sample=True)
    out = tmp_path / "expanded"
    expand_hf_dir(save_hf(base), out, 4)
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == [1, 2]
    generation = GenerationConfig.from_pretrained(out)
    assert generation.eos_token_id == [1, 2] and generation.temperature == 0.7 and generation.do_sample


def test_expand_command_line(save_hf, tmp_path):
    src = save_hf(hf_model(tied=True, layers=2))
    out = tmp_path / "cli"
    run = subprocess.run([sys.executable, "-m", "sailor2_jax.cli", "expand", "--base", src, "--layers", "4",
                          "--output-dir", str(out), "--untie-embeddings"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["new_layers"] == [1, 3] and report["untied"] is True
    assert Path(out, "config.json").is_file()
    chosen = subprocess.run([sys.executable, "-m", "sailor2_jax.cli", "expand", "--base", src, "--layers", "4",
                             "--output-dir", str(tmp_path / "eps"), "--rms-norm-eps", "1e-5",
                             "--max-position-embeddings", "128"], capture_output=True, text=True, timeout=300)
    assert chosen.returncode == 0, chosen.stderr
    hf = json.loads((tmp_path / "eps" / "config.json").read_text())
    assert (hf["rms_norm_eps"], hf["max_position_embeddings"]) == (1e-5, 128)
    again = subprocess.run([sys.executable, "-m", "sailor2_jax.cli", "expand", "--base", src, "--layers", "5",
                            "--output-dir", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "does not divide" in again.stderr
