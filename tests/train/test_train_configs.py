"""Every shipped train config loads and says what it should; config mistakes fail at load time, naming the field."""

import pytest

from sailor2_jax.config import CONFIG_DIR, load
from sailor2_jax.train.config import TrainConfig

CONFIGS = CONFIG_DIR / "train"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    cfg = load(TrainConfig, path)
    if path.stem.startswith("sailor2-") and ("_sft" in path.stem or path.stem.endswith("_dpo")):
        size, stage = path.stem.removeprefix("sailor2-").split("_", 1)
        assert cfg.data.seq_len == 4096 and cfg.data.files and cfg.model is None and cfg.init.checkpoint
        if stage == "sft_stage1":  # one epoch, large batches, from the pre-trained model
            assert cfg.data.source == "sft" and cfg.data.epochs == 1 and cfg.data.batch_size >= 256
            assert cfg.init.checkpoint.endswith(f"sailor2-{size}_stage2")
        elif stage == "sft_stage2":  # several epochs, smaller batches, on the selected set
            assert cfg.data.source == "sft" and cfg.data.epochs >= 2 and cfg.data.batch_size < 256
            assert cfg.init.checkpoint.endswith(f"sailor2-{size}_sft_stage1") and "select-sft" in cfg.data.files[0]
        else:
            assert cfg.data.source == "preference" and cfg.objective.kind == "dpo"
            assert cfg.init.checkpoint.endswith(f"sailor2-{size}_sft_stage2")
        assert cfg.optimizer.schedule.kind == "cosine" and cfg.optimizer.schedule.warmup_ratio == 0.03
    elif path.stem.startswith("sailor2-") and "_long" in path.stem:  # the long-context stage (32K, then 128K)
        size, stage = path.stem.removeprefix("sailor2-").split("_")
        T = {"long32k": 32768, "long128k": 131072}[stage]
        assert cfg.data.seq_len == T and cfg.data.batch_size * T == 4096 * 4096  # the 4K stages' tokens per step
        assert cfg.data.mixture == "long_context" and cfg.model.max_position_embeddings >= T
        previous = {"long32k": "stage2", "long128k": "long32k"}[stage]
        assert cfg.init.checkpoint.endswith(f"sailor2-{size}_{previous}") and not cfg.init.optimizer_state
        schedule = cfg.optimizer.schedule  # WSD restarted lower than stage 2's 1e-4
        assert schedule.kind == "wsd" and schedule.peak_lr == 1e-5 and schedule.warmup_steps > 0
        if T == 32768:  # Qwen2.5's native length: plain RoPE
            assert cfg.model.rope_scaling is None
        else:  # YaRN as Qwen2.5's model cards give it
            rs = cfg.model.rope_scaling
            assert (rs.type, rs.factor, rs.original_max_position_embeddings) == ("yarn", 4.0, 32768)
    elif path.stem.startswith("sailor2-"):
        size, stage = path.stem.removeprefix("sailor2-").split("_")
        assert cfg.data.seq_len == 4096 and cfg.optimizer.b2 == 0.95 and cfg.optimizer.weight_decay == 0.1
        assert cfg.data.mixture == stage and cfg.objective.kind == "pretrain"
        if stage == "stage1":  # the WSD plateau at 1e-4 from the expanded checkpoint
            assert cfg.init.hf_dir and cfg.optimizer.schedule.peak_lr == 1e-4 and cfg.optimizer.schedule.decay_steps == 0
        else:  # the anneal towards 1e-5 over (almost) the whole stage, from the stage-1 run
            assert cfg.init.checkpoint.endswith(f"sailor2-{size}_stage1")
            assert cfg.init.optimizer_state and cfg.optimizer.schedule.warmup_steps == 0  # stage 1's AdamW goes on
            assert cfg.optimizer.schedule.final_lr == 1e-5 and cfg.optimizer.schedule.decay_steps >= 0.9 * cfg.steps
    elif path.stem == "demo_online":  # continues the demo's DPO run with the demo's reward model
        assert cfg.model is None and cfg.init.checkpoint.endswith("demo/dpo") and cfg.online.reward_model
        assert cfg.data.source == "online" and cfg.objective.kind == "dpo" and cfg.online.rounds >= 2
    else:
        assert cfg.model.num_layers == 4 and cfg.checkpoint.every == 5 and cfg.log.every == 1
        assert cfg.data.source == {"demo_pretrain": "mixture", "demo_dpo": "preference",
                                   "demo_reward": "preference"}.get(path.stem, "sft")


def test_demo_pretrain_is_twenty_steps_of_the_tiny_model():
    cfg = load(TrainConfig, CONFIGS / "demo_pretrain.yaml")
    assert cfg.steps == 20 and cfg.model.hidden_size == 64 and cfg.data.source == "mixture"


@pytest.mark.parametrize("overrides,message", [
    (["optimizer.schedule.peak_lr=fast"], "optimizer.schedule.peak_lr"),
    (["objective.kind=ppo"], "objective.kind"),
    (["data.batch_size=6", "data.micro_batches=4"], "multiple of data.micro_batches"),
    (["init.hf_dir=/x"], "init.hf_dir's config.json defines the model"),
    (["optimizer.trainabel=all"], "optimizer.trainabel"),
    (["objective.kind=reward", "data.source=preference", "data.files=[x.jsonl]", "optimizer.trainable=new_layers"],
     "the score head is not a layer"),
])
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load(TrainConfig, CONFIGS / "demo_sft.yaml", overrides)


def test_a_new_layers_mask_without_new_layers_is_refused():
    from sailor2_jax.train.init import new_layers

    cfg = load(TrainConfig, CONFIGS / "demo_sft.yaml",
               ["optimizer.trainable=new_layers", "optimizer.new_layers=[false, false, false, false]"])
    with pytest.raises(ValueError, match="optimizer.new_layers marks no layer as new"):
        new_layers(cfg)
