"""Resume with the real data pipeline (UDHR text → tokenizer → seqio → grain mixture and packing): the grain
iterator's state travels in the checkpoint, so the resumed run sees the same batches and logs the same losses."""

import json
import shutil

from sailor2_jax.config import load
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.loop import train

from sailor2_jax.config import find_config

ROOT_CONFIG = find_config("train", "demo_pretrain")


def _rows(path):
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_resume_from_a_checkpoint_replays_the_same_batches(tmp_path):
    config = ROOT_CONFIG
    cfg = load(TrainConfig, config, ["steps=4", "checkpoint.every=2", "checkpoint.keep=5", "data.seq_len=64",
                                     "data.batch_size=8", "log.eval_every=0", "log.progress=false",
                                     "log.tensorboard=false", "model.num_layers=2"])
    first = train(cfg, tmp_path)
    assert first.stopped == "done" and first.resumed_from is None
    before = _rows(tmp_path / "metrics.jsonl")
    shutil.rmtree(tmp_path / "checkpoints" / "4")  # as if the run had died after step 2's checkpoint
    again = train(cfg, tmp_path)
    assert again.resumed_from == 2
    after = _rows(tmp_path / "metrics.jsonl")
    assert sorted(after) == [1, 2, 3, 4]
    for step in (3, 4):  # same batches (languages and token counts) and the same losses, bitwise
        assert after[step]["loss_tokens"] == before[step]["loss_tokens"]
        assert {k for k in after[step] if k.startswith("loss/")} == {k for k in before[step] if k.startswith("loss/")}
        assert after[step]["loss"] == before[step]["loss"]


def test_resume_with_another_process_count_merges_the_saved_iterator_states(tmp_path):
    """A run with 2 data shards; its step-2 checkpoint rewritten as if 2 processes had saved it (one shard each):
    one process resumes from the merged states and logs the same losses as the uninterrupted run."""
    config = ROOT_CONFIG
    cfg = load(TrainConfig, config, ["steps=4", "checkpoint.every=2", "checkpoint.keep=5", "data.seq_len=64",
                                     "data.batch_size=8", "log.eval_every=0", "log.progress=false",
                                     "log.tensorboard=false", "model.num_layers=2",
                                     "data.mixture_overrides=[loader.data_shards=2]"])
    train(cfg, tmp_path)
    before = _rows(tmp_path / "metrics.jsonl")
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    data = tmp_path / "checkpoints" / "2" / "data"
    state = json.loads((data / "process_0-of-1.json").read_text())
    assert state["data_shards"] == 2 and sorted(state["pipeline"]["shards"]) == ["0", "1"]
    for p in range(2):
        (data / f"process_{p}-of-2.json").write_text(json.dumps(
            state | {"pipeline": {"shards": {str(p): state["pipeline"]["shards"][str(p)]}}}))
    (data / "process_0-of-1.json").unlink()
    again = train(cfg, tmp_path)
    assert again.resumed_from == 2
    after = _rows(tmp_path / "metrics.jsonl")
    for step in (3, 4):
        assert after[step]["loss"] == before[step]["loss"]
