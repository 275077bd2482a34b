"""HF import/export against `transformers` on CPU: logits parity, reload parity, every tensor round-trips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from model_helpers import hf_logits, hf_model, run_model, tokens
from safetensors import safe_open
from transformers import Qwen2ForCausalLM

from sailor2_jax.config import ComputeConfig
from sailor2_jax.model.hf import export_hf, import_hf, push_to_hub

FP32 = ComputeConfig(dtype="float32")


def _tensors(path: str | Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), "np") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


@pytest.mark.parametrize("tied,layers", [(True, 2), (False, 4)])
def test_import_matches_transformers_and_export_round_trips(tied, layers, save_hf, mesh8, tmp_path):
    ref = hf_model(tied=tied, layers=layers)
    src = save_hf(ref)
    model = import_hf(src, mesh8, FP32)
    assert model.cfg.num_layers == layers and model.cfg.tie_embeddings == tied
    x = tokens()
    expected = hf_logits(ref, x)
    got = run_model(model, mesh8, x)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()

    out = export_hf(model, tmp_path / "export", max_shard_size=40_000)  # forces several shards + an index
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    reloaded, info = Qwen2ForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    np.testing.assert_array_equal(hf_logits(reloaded.eval(), x), expected)

    original, exported = _tensors(src), _tensors(out)
    assert original.keys() == exported.keys()
    for key in original:
        np.testing.assert_array_equal(exported[key], original[key], err_msg=key)


def test_bf16_checkpoint_imports_with_dtype_conversion(save_hf, mesh8, tmp_path):
    import torch
    ref = hf_model(tied=False).to(torch.bfloat16)
    model = import_hf(save_hf(ref), mesh8, FP32)
    assert model.layers.q[...].dtype == np.float32  # fp32 master weights from a bf16 file
    x = tokens()
    expected = hf_logits(ref.float(), x)
    got = run_model(model, mesh8, x)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    out = export_hf(model, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    original, exported = _tensors(save_hf(ref)), _tensors(out)
    for key in original:
        np.testing.assert_array_equal(exported[key], original[key], err_msg=key)


def test_export_copies_tokenizer_and_is_atomic(save_hf, mesh1, tmp_path):
    model = import_hf(save_hf(hf_model(tied=True, layers=2)), mesh1)
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    (tok / "tokenizer_config.json").write_text("{}")
    out = export_hf(model, tmp_path / "out", tokenizer=tok)
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 1
    assert (out.stat().st_mode & 0o777) == (tok.stat().st_mode & 0o777)  # as mkdir makes it, not mkdtemp's 0700
    with pytest.raises(FileExistsError, match="exists"):
        export_hf(model, out)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert leftovers == []


def test_push_to_hub_uses_env_token_and_never_prints_it(monkeypatch, tmp_path, capsys, caplog):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kw):
            calls["create"] = (repo_id, kw)

        def upload_folder(self, folder_path, repo_id, **kw):
            calls["upload"] = (folder_path, repo_id)
            return type("Info", (), {"commit_url": f"https://example.invalid/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ValueError, match="HF_TOKEN"):
        push_to_hub(tmp_path, "org/model")
    secret = "hf_secret_value_123"
    monkeypatch.setenv("HF_TOKEN", secret)
    url = push_to_hub(tmp_path, "org/model")
    assert calls["token"] == secret
    assert calls["upload"] == (str(tmp_path), "org/model")
    assert calls["create"][0] == "org/model"
    assert "org/model" in url
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err + caplog.text


# --- bad input: each gives an error that names what is wrong ------------------------------------------------------

def test_pickle_weights_are_refused(save_hf, mesh1, tmp_path):
    d = Path(save_hf(hf_model(tied=True, layers=2)))
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"refusing pickle-format weights \['pytorch_model.bin'\]"):
        import_hf(d, mesh1)


def _edit_tensors(src: str, out: Path, edit) -> Path:
    from safetensors.numpy import save_file
    out.mkdir()
    tensors = _tensors(src)
    edit(tensors)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text((Path(src) / "config.json").read_text())
    return out


def test_missing_unexpected_and_misshapen_tensors_are_named(save_hf, mesh1, tmp_path):
    src = save_hf(hf_model(tied=False, layers=2))
    key = "model.layers.1.mlp.up_proj.weight"
    missing = _edit_tensors(src, tmp_path / "missing", lambda t: t.pop(key))
    with pytest.raises(ValueError, match=rf"missing tensors \['{key}'\]"):
        import_hf(missing, mesh1)
    extra = _edit_tensors(src, tmp_path / "extra", lambda t: t.update({"model.layers.2.extra": np.ones(3)}))
    with pytest.raises(ValueError, match=r"unexpected tensors \['model.layers.2.extra'\]"):
        import_hf(extra, mesh1)
    bad = _edit_tensors(src, tmp_path / "shape", lambda t: t.update({key: t[key][:, :-1]}))
    with pytest.raises(ValueError, match=rf"{key} has shape \(96, 63\), expected \(96, 64\)"):
        np.asarray(import_hf(bad, mesh1).layers.up[...])


@pytest.mark.parametrize("edit,message", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "unsupported architecture"),
    ({"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
    ({"rope_scaling": {"type": "longrope", "factor": 4.0}}, "unsupported rope scaling type .longrope."),
    ({"use_sliding_window": True}, "use_sliding_window"),
    ({"num_attention_heads": 5}, "num_attention_heads"),
])
def test_unsupported_configs_are_refused(edit, message, save_hf, mesh1):
    d = Path(save_hf(hf_model(tied=True, layers=2)))
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(ValueError, match=message):
        import_hf(d, mesh1)


def test_missing_files_are_named(tmp_path, mesh1, save_hf):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        import_hf(tmp_path, mesh1)
    d = Path(save_hf(hf_model(tied=True, layers=2)))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1-of-2.safetensors"}}))
    os.remove(d / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model-1-of-2.safetensors"):
        import_hf(d, mesh1)
