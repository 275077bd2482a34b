"""Fixtures of the evaluation tests: a tiny random Qwen2 with the real Qwen2.5 vocabulary (so our tokenizer and
transformers' agree) saved as an HF directory, `transformers`' copy of it (fp32), and ours loaded on all devices."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from generate_helpers import hf_model  # noqa: E402

from sailor2_jax.data.vocab import EOS_ID, save_hf_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_eval")
    model = hf_model(vocab=151936, hidden=32, seed=3)
    model.generation_config.eos_token_id = EOS_ID
    model.save_pretrained(path)
    save_hf_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def reference(hf_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return (AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(hf_dir))


@pytest.fixture(scope="session")
def loaded(hf_dir):
    from sailor2_jax.generate.load import load
    return load(argparse.Namespace(model=str(hf_dir), checkpoint=None, tokenizer=None, dtype="float32",
                                   mesh="-1,1,1"))
