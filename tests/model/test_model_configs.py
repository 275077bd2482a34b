"""Real configs without memory, config round trips and errors, and the sharding of every parameter."""

from __future__ import annotations

import argparse

import jax
import pytest
from jax.sharding import PartitionSpec as P

from sailor2_jax.config import ComputeConfig, MeshConfig, ModelConfig, load, load_model_config
from sailor2_jax.model.init import create_model, param_count
from sailor2_jax.sharding import logical_size, logical_to_spec, make_mesh


@pytest.mark.parametrize("name,billions", [("sailor2-1b", 0.988), ("sailor2-8b", 8.547), ("sailor2-20b", 19.173),
                                           ("qwen2.5-0.5b", 0.494), ("qwen2.5-7b", 7.616),
                                           ("qwen2.5-14b", 14.770)])
def test_parameter_counts_of_real_configs(name, billions):
    assert param_count(load_model_config(name)) == pytest.approx(billions * 1e9, rel=1e-3)


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "sailor2-1b", "sailor2-8b", "sailor2-20b"])
def test_hf_config_round_trip(name):
    cfg = load_model_config(name)
    assert ModelConfig.from_hf(cfg.to_hf("bfloat16")) == cfg


def test_transformers_reads_our_config_json():
    from transformers import Qwen2Config
    cfg = load_model_config("sailor2-8b")
    hf = Qwen2Config(**cfg.to_hf("bfloat16"))
    assert (hf.num_hidden_layers, hf.num_key_value_heads, hf.vocab_size, hf.tie_word_embeddings) == (32, 4, 151936,
                                                                                                     False)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="hidden_sizee: Extra inputs are not permitted"):
        load_model_config("tiny", ["hidden_sizee=3"])
    with pytest.raises(ValueError, match="num_layers: Input should be greater than 0"):
        load_model_config("tiny", ["num_layers=0"])
    with pytest.raises(ValueError, match="remat: Input should be"):
        load(ComputeConfig, None, ["remat=sometimes"])
    with pytest.raises(ValueError, match="not of the form"):
        load_model_config("tiny", ["num_layers"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_size: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load(ModelConfig, bad)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_model_config("no-such-model")


def test_mesh_text_becomes_a_mesh_config():
    """Where a mesh arrives as text (`--mesh`, lm-eval's model_args) it is parsed once into a typed MeshConfig."""
    from sailor2_jax.config import override
    from sailor2_jax.commands._args import add_model_arguments

    assert MeshConfig.parse("-1,1,1") == MeshConfig(data=-1, fsdp=1, tensor=1)
    assert MeshConfig.parse("2x2x2") == MeshConfig.parse("2;2;2") == MeshConfig(data=2, fsdp=2, tensor=2)
    with pytest.raises(ValueError, match=r"mesh '2,2': expected sizes DATA,FSDP,TENSOR or DATA,FSDP,CONTEXT,TENSOR "
                                         r"\(three or four integers\)"):
        MeshConfig.parse("2,2")
    assert MeshConfig.parse("1,2,4,1") == MeshConfig(data=1, fsdp=2, context=4, tensor=1)
    with pytest.raises(ValueError, match="mesh '-1,-1,1'.*at most one -1"):
        MeshConfig.parse("-1,-1,1")
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    assert p.parse_args(["--model", "m"]).mesh == MeshConfig(data=-1, fsdp=1, tensor=1)  # the default, typed
    assert p.parse_args(["--model", "m", "--mesh", "1,2,4"]).mesh == MeshConfig(data=1, fsdp=2, tensor=4)
    # a flag's value joins the overrides as JSON, which YAML reads back unchanged
    assert load(MeshConfig, None, [override("fsdp", 4)]) == MeshConfig(fsdp=4)


# Independent statement of the intended layout on a (data 2, fsdp 2, tensor 2) mesh.
FSDP = ("fsdp", "context")  # the model dimension: FSDP over both (context devices are data-parallel)
EXPECTED_SPECS = {
    "embed": P("tensor", FSDP),
    "lm_head": P(FSDP, "tensor"),
    "final_norm": P(None),
    "layers.attn_norm": P(None, None),
    "layers.mlp_norm": P(None, None),
    "layers.q": P(None, FSDP, "tensor", None),
    "layers.k": P(None, FSDP, "tensor", None),
    "layers.v": P(None, FSDP, "tensor", None),
    "layers.q_bias": P(None, "tensor", None),
    "layers.k_bias": P(None, "tensor", None),
    "layers.v_bias": P(None, "tensor", None),
    "layers.o": P(None, "tensor", None, FSDP),
    "layers.gate": P(None, FSDP, "tensor"),
    "layers.up": P(None, FSDP, "tensor"),
    "layers.down": P(None, "tensor", FSDP),
}


def test_every_parameter_gets_its_intended_partition_spec(mesh8):
    from flax import nnx
    model = create_model(load_model_config("tiny", ["tie_embeddings=false", "vocab_size=256"]), mesh8)
    flat = {".".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert flat.keys() == EXPECTED_SPECS.keys()
    for name, array in flat.items():
        assert array.sharding.mesh.shape == {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
        normalised = P(*(tuple(array.sharding.spec) + (None,) * (array.ndim - len(array.sharding.spec))))
        assert normalised == EXPECTED_SPECS[name], name
        if array.ndim >= 2 and array.size >= 64 * 64:  # every large matrix is split: nothing replicated by accident
            shard = array.addressable_shards[0].data
            assert shard.size * 4 == array.size, name


def test_sharding_errors():
    with pytest.raises(ValueError, match="mesh axis 'tensor' is used by both logical axes 'q_heads' and 'mlp'"):
        logical_to_spec(("q_heads", "mlp"))
    with pytest.raises(KeyError, match="'nonsense' has no entry"):
        logical_to_spec(("nonsense",))
    with pytest.raises(ValueError, match="needs 12 devices, 8 are available"):
        make_mesh(MeshConfig(data=3, fsdp=2, tensor=2))
    with pytest.raises(ValueError, match="at most one -1"):
        MeshConfig(data=-1, fsdp=-1)
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=8))
    cfg = load_model_config("tiny", ["vocab_size=256"])  # 2 kv heads cannot be split 8 ways
    with pytest.raises(ValueError, match=r"layers/k: dimension 2 of shape \(4, 64, 2, 16\) \(size 2\) cannot be split"):
        create_model(cfg, mesh)


def test_mesh_fills_the_remaining_axis():
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
    assert mesh.size == len(jax.devices())


def test_logical_size_counts_the_devices_a_logical_axis_is_split_over():
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1, tensor=2))
    assert (logical_size("batch", mesh), logical_size("act_vocab", mesh), logical_size("act_embed", mesh)) == (4, 2, 1)
    assert logical_size("act_vocab") == 1  # outside a mesh
    with jax.set_mesh(mesh):
        assert logical_size("act_vocab") == 2  # the current mesh
