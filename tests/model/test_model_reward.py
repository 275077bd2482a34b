"""Reward models against `transformers`' Qwen2ForSequenceClassification (tiny, random, fp32): scores, import,
export, the last-token rule."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from model_helpers import VOCAB
from transformers import AutoModelForSequenceClassification, Qwen2Config, Qwen2ForSequenceClassification

from sailor2_jax.config import ComputeConfig
from sailor2_jax.model.reward import export_reward, import_reward, rewards, score_sequences

FP32 = ComputeConfig(dtype="float32")
PAD = 5


def hf_classifier(tied: bool, seed: int = 0) -> Qwen2ForSequenceClassification:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied, rope_theta=1e6,
                      rms_norm_eps=1e-6, max_position_embeddings=256, bos_token_id=0, eos_token_id=1,
                      pad_token_id=PAD, num_labels=1)
    model = Qwen2ForSequenceClassification(cfg).eval()
    with torch.no_grad():  # non-trivial biases, norms and head, so a mis-mapped tensor cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or name.startswith("score"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def hf_scores(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long)).logits[:, 0].float().numpy()


def right_padded(lengths, T: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    out = np.full((len(lengths), T), PAD, np.int32)
    for r, n in enumerate(lengths):
        out[r, :n] = rng.randint(PAD + 1, VOCAB, n)
    return out


@pytest.mark.parametrize("tied", [True, False])
def test_import_scores_match_transformers_and_export_round_trips(tied, save_hf, mesh8, tmp_path):
    ref = hf_classifier(tied)
    src = save_hf(ref)
    model = import_reward(src, mesh8, FP32)
    assert model.pad_id == PAD and model.cfg.tie_embeddings == tied
    x = right_padded([16, 9, 3, 12, 1, 16, 7, 5], 16)
    x[1, 4] = PAD  # a pad id inside the text: transformers still reads the rightmost non-pad token
    x[7] = PAD     # an all-padding row: read at index 0
    expected = hf_scores(ref, x)
    graphdef, state = nnx.split(model)
    with jax.set_mesh(mesh8):
        got = np.asarray(jax.jit(lambda s, t: rewards(nnx.merge(graphdef, s), t))(state, x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())

    out = export_reward(model, tmp_path / "export", max_shard_size=30_000)
    hf = json.loads((out / "config.json").read_text())
    assert hf["architectures"] == ["Qwen2ForSequenceClassification"] and hf["pad_token_id"] == PAD
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    np.testing.assert_array_equal(hf_scores(reloaded.eval(), x), expected)
    for (k, a), (k2, b) in zip(sorted(ref.state_dict().items()), sorted(reloaded.state_dict().items())):
        assert k == k2
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_score_sequences_equals_one_by_one_transformers(save_hf, mesh8):
    ref = hf_classifier(tied=False, seed=1)
    model = import_reward(save_hf(ref), mesh8, FP32)
    rng = np.random.RandomState(3)
    sequences = [rng.randint(PAD + 1, VOCAB, n).astype(np.int32) for n in (5, 70, 1, 33, 12, 64, 65, 2, 40)]
    got = score_sequences(model, sequences, mesh8, batch_size=4, progress=False)  # 3 batches, 2 lengths buckets
    expected = np.asarray([hf_scores(ref, s[None])[0] for s in sequences])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_refuses_what_is_not_a_one_score_classifier(save_hf, mesh1, tmp_path):
    from model_helpers import hf_model

    with pytest.raises(ValueError, match="architectures"):
        import_reward(save_hf(hf_model(tied=True, layers=1)), mesh1, FP32)
    two = hf_classifier(tied=True)
    two.config.num_labels = 2
    path = save_hf(two)
    with pytest.raises(ValueError, match="2 labels"):
        import_reward(path, mesh1, FP32)


def test_a_fresh_reward_model_exports_to_what_transformers_scores_alike(mesh8, tmp_path):
    from sailor2_jax.config import load_model_config
    from sailor2_jax.model.reward import create_reward

    cfg = load_model_config("tiny").replace(vocab_size=VOCAB, num_layers=2)
    model = create_reward(cfg, mesh8, pad_id=PAD, seed=3, compute=FP32)
    assert model.score[...].shape == (cfg.hidden_size, 1)
    out = export_reward(model, tmp_path / "rm")
    x = right_padded([16, 5, 9, 2, 16, 11, 3, 8], 16, seed=4)
    graphdef, state = nnx.split(model)
    with jax.set_mesh(mesh8):
        ours = np.asarray(jax.jit(lambda s, t: rewards(nnx.merge(graphdef, s), t))(state, x))
    theirs = hf_scores(AutoModelForSequenceClassification.from_pretrained(out).eval(), x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())
