"""Training from an expanded HF checkpoint (`init.hf_dir`) with `trainable: new_layers`: the mask comes from the
directory's sailor2_expansion.json; after training and export, every base layer, the embeddings and the final norm
equal the base model's tensors in transformers, and the inserted layers have moved."""

import json

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sailor2_jax.cli import main as cli_main
from sailor2_jax.config import load
from sailor2_jax.model.expand import expand_hf_dir
from sailor2_jax.train.init import architecture
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.loop import train


def test_expanded_init_trains_only_new_layers_and_exports(tmp_path):
    torch.manual_seed(0)
    base = Qwen2ForCausalLM(Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                        max_position_embeddings=256)).eval()
    base.save_pretrained(tmp_path / "base")
    summary = expand_hf_dir(tmp_path / "base", tmp_path / "expanded", 4)
    is_new = summary["is_new_layer"]
    assert json.loads((tmp_path / "expanded" / "sailor2_expansion.json").read_text())["is_new_layer"] == is_new

    cfg = load(TrainConfig, None, ["data.source=synthetic", f"init.hf_dir={tmp_path / 'expanded'}", "optimizer.trainable=new_layers",
                                   "optimizer.schedule.kind=constant", "optimizer.schedule.peak_lr=1e-2",
                                   "data.batch_size=8", "data.seq_len=32", "steps=3", "log.progress=false",
                                   "log.tensorboard=false", "checkpoint.every=3"])
    assert cfg.model is None and architecture(cfg).num_layers == 4
    result = train(cfg, tmp_path / "run")
    assert result.step == 3 and result.stopped == "done"
    assert cli_main(["export", "--checkpoint", str(tmp_path / "run"), "--output-dir", str(tmp_path / "hf")]) == 0

    trained = dict(Qwen2ForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).named_parameters())
    original = dict(base.named_parameters())
    old = [i for i, new in enumerate(is_new) if not new]
    for i, src in zip(old, range(2)):  # base layer `src` sits at index i of the expanded model
        for name, w in original.items():
            if name.startswith(f"model.layers.{src}."):
                moved = name.replace(f"model.layers.{src}.", f"model.layers.{i}.")
                np.testing.assert_array_equal(trained[moved].detach().numpy(), w.detach().numpy(), err_msg=moved)
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        np.testing.assert_array_equal(trained[name].detach().numpy(), original[name].detach().numpy())
    for i, new in enumerate(is_new):
        if new:  # the zero-initialised output projections of inserted blocks start learning at once
            assert np.abs(trained[f"model.layers.{i}.self_attn.o_proj.weight"].detach().numpy()).max() > 0
