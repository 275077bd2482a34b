"""Fixtures of the serving tests: one tiny random Qwen2 with the real vocabulary and tokenizer (fp32), served on
127.0.0.1 from a thread for the whole session (4 slots of 64 tokens, two prefill buckets: few programs to compile)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from generate_helpers import hf_model, one_device_mesh  # noqa: E402
from serve_helpers import SYSTEM  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(transformers model, its HF directory): real vocabulary, our tokenizer files, eos <|endoftext|>."""
    from sailor2_jax.tokenizer import EOS_ID, save_hf_tokenizer

    path = tmp_path_factory.mktemp("serve-model")
    ref = hf_model(vocab=151936, hidden=32, seed=0)
    ref.generation_config.eos_token_id = EOS_ID
    ref.save_pretrained(path)
    save_hf_tokenizer(path)
    return ref, path


@pytest.fixture(scope="session")
def server(tiny):
    from sailor2_jax.model.source import ModelSource, open_model
    from sailor2_jax.serve.server import Server

    opened = open_model(ModelSource(path=str(tiny[1]), dtype="float32"), mesh=one_device_mesh())
    srv = Server(opened, model_name="tiny", port=0, max_slots=4, max_len=64, buckets=[32, 64], system=SYSTEM,
                 log_level="warning", drain_seconds=5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)
