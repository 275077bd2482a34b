"""The `reward` objective (Bradley-Terry) in the step family: whole conversations rebuilt from the batch rows, its
loss falls and its accuracy rises on separable pairs, and the trained run exports as a
`Qwen2ForSequenceClassification` that scores like the JAX model in `transformers`."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from sailor2_jax.cli import main
from sailor2_jax.config import load
from sailor2_jax.model.reward import rewards
from sailor2_jax.post.preference_data import EncodedPair
from sailor2_jax.post.conversation_files import PreferencePair, Source
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.model.source import open_run
from sailor2_jax.train.loop import train
from sailor2_jax.train.objectives import conversation_tokens

PAD = 0


def test_conversation_tokens_rebuild_the_whole_rows():
    """A preference row holds ids[:-1] as inputs and ids[1:] as targets: the reward reads the last id too."""
    ids = {"chosen": np.arange(10, 17, dtype=np.int32), "rejected": np.arange(20, 24, dtype=np.int32)}
    mask = {s: np.ones(len(v), bool) for s, v in ids.items()}
    pair = EncodedPair(ids, mask, PreferencePair([], [], [], None, Source("f", 1)))
    T = 6  # the chosen side fills its row: its last id lives only in the targets
    batch = {f"{s}_{k}": jnp.asarray(v[None]) for s in ("chosen", "rejected")
             for k, v in pair.row(s, T, pad_id=7).items()}
    np.testing.assert_array_equal(conversation_tokens(batch, "chosen_", PAD)[0], ids["chosen"])
    np.testing.assert_array_equal(conversation_tokens(batch, "rejected_", PAD)[0], [20, 21, 22, 23, 0, 0, 0])


class SeparablePairs:
    """Pairs a reward model can learn in a few steps: the same random prompt, a chosen response of tokens from the
    upper half of the vocabulary, a rejected one from the lower half (lengths random, rows right-padded)."""

    def __init__(self, batch_size: int, seq_len: int, seed: int):
        self.batch_size, self.seq_len, self.seed, self.index = batch_size, seq_len, seed, 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.index])
        self.index += 1
        B, T = self.batch_size, self.seq_len
        out = {}
        prompt = rng.integers(1, 256, (B, T + 1))
        n_prompt = rng.integers(4, T // 2, B)
        for side, (lo, hi) in {"chosen": (128, 256), "rejected": (1, 128)}.items():
            ids = np.where(np.arange(T + 1) < n_prompt[:, None], prompt, rng.integers(lo, hi, (B, T + 1)))
            n = np.minimum(n_prompt + rng.integers(2, T // 2, B), T + 1)     # ids per row
            real = np.arange(T) < (n - 1)[:, None]
            out |= {f"{side}_tokens": np.where(real, ids[:, :-1], PAD).astype(np.int32),
                    f"{side}_targets": np.where(real, ids[:, 1:], PAD).astype(np.int32),
                    f"{side}_loss_mask": (real & (np.arange(T) >= (n_prompt - 1)[:, None])).astype(np.int32),
                    f"{side}_segment_ids": real.astype(np.int32),
                    f"{side}_positions": np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy()}
        return out

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = state["index"]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reward") / "run"
    cfg = load(TrainConfig, None, [
        "model.base=tiny", "model.vocab_size=256", "model.num_layers=2", "compute.dtype=float32",
        "objective.kind=reward", f"objective.reward_pad_id={PAD}", "steps=12", "data.batch_size=16",
        "data.seq_len=32", "optimizer.schedule.kind=constant", "optimizer.schedule.peak_lr=1e-2",
        "optimizer.weight_decay=0.0", "log.every=1", "log.progress=false", "log.tensorboard=false",
        "checkpoint.every=100"])
    result = train(cfg, out, data_iter=SeparablePairs(16, 32, seed=0))
    assert result.stopped == "done" and result.step == 12
    return out


def test_reward_objective_learns_separable_pairs(reward_run):
    rows = [json.loads(line) for line in (reward_run / "metrics.jsonl").read_text().splitlines()]
    loss, acc = [r["loss"] for r in rows], [r["accuracy"] for r in rows]
    assert np.isclose(loss[0], np.log(2), atol=0.05)        # a fresh head scores both sides alike: -log σ(0)
    assert np.mean(loss[-3:]) < loss[0] - 0.2, loss
    assert np.mean(acc[-3:]) >= 0.9 > acc[0], acc
    assert all(r["score_margin"] == pytest.approx(r["chosen_score"] - r["rejected_score"], abs=1e-5) for r in rows)


def test_reward_run_exports_as_a_transformers_classifier(reward_run, tmp_path):
    assert main(["export", "--checkpoint", str(reward_run), "--output-dir", str(tmp_path / "hf")]) == 0
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert hf.config.pad_token_id == PAD and hf.config.num_labels == 1
    model, _ = open_run(reward_run, dtype="float32")
    batch = next(SeparablePairs(16, 32, seed=99))  # pairs the run never saw
    both = np.concatenate([np.asarray(conversation_tokens(batch, f"{s}_", PAD)) for s in ("chosen", "rejected")])
    ours = np.asarray(rewards(model, jnp.asarray(both)))
    with torch.no_grad():
        theirs = hf(torch.tensor(both, dtype=torch.long)).logits[:, 0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert np.mean(theirs[:16] > theirs[16:]) >= 0.9     # and it still ranks unseen pairs after export


def test_reward_run_is_refused_where_a_language_model_is_asked_for(reward_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi", "language": "en"}) + "\n")
    assert main(["onpolicy", "--policy", str(reward_run), "--reward-model", str(reward_run), "--prompts",
                 str(prompts), "--output", str(tmp_path / "pairs.jsonl")]) != 0
    assert "a reward model's run (objective kind: reward) cannot generate" in capsys.readouterr().err
    assert not (tmp_path / "pairs.jsonl").exists()


def test_reward_run_starts_from_a_language_model(tmp_path):
    """init.hf_dir = a Qwen2 LM: its decoder under a new score head (the LM head dropped); lr 0 keeps them."""
    from flax import nnx
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.hf import import_hf
    from sailor2_jax.sharding import make_mesh

    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    lm.save_pretrained(tmp_path / "lm")
    cfg = load(TrainConfig, None, [f"init.hf_dir={tmp_path / 'lm'}", "objective.kind=reward", "steps=1",
                                   "data.source=synthetic", "data.batch_size=8", "data.seq_len=16",
                                   "optimizer.schedule.kind=constant", "optimizer.schedule.peak_lr=0",
                                   "log.progress=false", "log.tensorboard=false", "compute.dtype=float32"])
    train(cfg, tmp_path / "run")
    model, _ = open_run(tmp_path / "run", dtype="float32")
    assert model.pad_id == 151643 and model.score[...].shape == (64, 1)
    ours = nnx.to_pure_dict(nnx.state(model.backbone))
    want = nnx.to_pure_dict(nnx.state(import_hf(tmp_path / "lm", make_mesh(MeshConfig()))))
    assert "lm_head" in want and "lm_head" not in ours
    for key in ("embed", "final_norm"):
        np.testing.assert_array_equal(np.asarray(ours[key]), np.asarray(want[key]))
    np.testing.assert_array_equal(np.asarray(ours["layers"]["q"]), np.asarray(want["layers"]["q"]))
