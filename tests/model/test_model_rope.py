"""RoPE scaling (linear, dynamic, yarn) against transformers' Qwen2 at positions far past the original length, and
config.json's rope scaling carried through import and export (both transformers 4 and 5 spellings)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_helpers import hf_logits, hf_model, run_model, tokens
from transformers import Qwen2ForCausalLM

from sailor2_jax.config import ComputeConfig, ModelConfig, RopeScaling
from sailor2_jax.model.hf import export_hf, import_hf

FP32 = ComputeConfig(dtype="float32")
ORIGINAL = 32   # the tiny model's "pre-training" length; the test runs to 6x past it
LENGTH = 192

SCALINGS = {
    "linear": {"type": "linear", "factor": 2.0},
    "dynamic": {"type": "dynamic", "factor": 3.0},
    "yarn": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL},
    "yarn_tuned": {"rope_type": "yarn", "factor": 6.0, "original_max_position_embeddings": ORIGINAL,
                   "beta_fast": 16.0, "beta_slow": 2.0, "attention_factor": 1.3, "truncate": False},
}


@pytest.mark.parametrize("name", list(SCALINGS))
def test_scaled_rope_logits_match_transformers_and_export_carries_it(name, save_hf, mesh8, tmp_path):
    scaling = SCALINGS[name]
    max_pos = ORIGINAL * 4 if scaling.get("factor") == 4.0 else ORIGINAL
    ref = hf_model(tied=True, layers=2, rope_scaling=dict(scaling), max_position_embeddings=max_pos, rope_theta=1e4)
    model = import_hf(save_hf(ref), mesh8, FP32)
    assert model.cfg.rope_scaling is not None and model.cfg.rope_scaling.type == name.split("_")[0]
    x = tokens(batch=2, length=LENGTH)
    expected = hf_logits(ref, x)
    got = run_model(model, mesh8, x)
    tol = 2e-4 * np.abs(expected).max()
    assert np.abs(got - expected).max() <= tol
    # without the scaling the far positions differ by far more than the tolerance: the test can fail
    plain = hf_model(tied=True, layers=2, max_position_embeddings=max_pos, rope_theta=1e4)
    assert np.abs(hf_logits(plain, x)[:, ORIGINAL * 2:] - expected[:, ORIGINAL * 2:]).max() > 10 * tol

    out = export_hf(model, tmp_path / "export")
    written = json.loads((out / "config.json").read_text())
    assert written["rope_scaling"]["rope_type"] == written["rope_parameters"]["rope_type"] == scaling.get(
        "type", scaling.get("rope_type"))
    reloaded = Qwen2ForCausalLM.from_pretrained(out).eval()
    hf_params = {k: v for k, v in ref.config.rope_parameters.items() if k != "type"}
    assert {k: v for k, v in reloaded.config.rope_parameters.items() if k != "type"} == hf_params
    np.testing.assert_allclose(hf_logits(reloaded, x), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_rope_scaling_from_config_json_both_spellings_and_errors():
    base = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=131072)
    v4 = ModelConfig.from_hf(base | {"rope_theta": 1e6, "rope_scaling": {
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}})
    v5 = ModelConfig.from_hf(base | {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "rope_theta": 1e6}})
    assert v4 == v5 and v4.rope_scaling == RopeScaling(type="yarn", factor=4.0,
                                                         original_max_position_embeddings=32768)
    assert ModelConfig.from_hf(base | {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
                               ).rope_scaling is None
    with pytest.raises(ValueError, match="unsupported rope scaling type 'longrope'"):
        ModelConfig.from_hf(base | {"rope_scaling": {"rope_type": "longrope", "factor": 2.0}})
    with pytest.raises(ValueError, match=r"unsupported keys \['mscale'\]"):
        ModelConfig.from_hf(base | {"rope_scaling": {"type": "yarn", "factor": 2.0, "mscale": 1.0}})
    with pytest.raises(ValueError, match="factor"):
        ModelConfig.from_hf(base | {"rope_scaling": {"type": "linear", "factor": 0.5}})
