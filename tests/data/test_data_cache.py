"""seqio tasks over the embedded data, the Beam cache (`sailor2-jax cache`), loading it, and `inspect-data`."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from data_helpers import write_config

from sailor2_jax.cli import main
from sailor2_jax.config import DATA_DIR
from sailor2_jax.languages import LANGUAGE_INDEX
from sailor2_jax.data.config import load_data_config
from sailor2_jax.tokenizer import EOS_ID
from sailor2_jax.data.vocab import get_vocabulary

pytestmark = pytest.mark.slow


def expected_documents(lang: str) -> list[tuple[int, ...]]:
    """Independent tokenisation of data/udhr/<lang>.jsonl: NFC, stripped, Qwen tokens, then <|endoftext|>."""
    tok = get_vocabulary().tokenizer
    out = []
    for line in (DATA_DIR / "udhr" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines():
        text = unicodedata.normalize("NFC", json.loads(line)["text"]).strip()
        out.append(tuple(tok.encode(text, add_special_tokens=False).ids) + (EOS_ID,))
    return out


def test_seqio_task_yields_tokens_and_language():
    import seqio

    from sailor2_jax.data import tasks

    cfg = load_data_config("demo_stage1")
    mix = tasks.register(cfg)
    assert isinstance(mix, seqio.Mixture) and len(mix.tasks) == 9
    got = list(tasks.iterate_task(seqio.get_mixture_or_task("udhr_th")))
    assert [tuple(ex["tokens"]) for ex in got] == expected_documents("th")
    assert {int(ex["language"]) for ex in got} == {LANGUAGE_INDEX["th"]}


def test_seqio_task_bad_input_names_file_and_line(tmp_path):
    import seqio

    from sailor2_jax.data import tasks
    from sailor2_jax.data.sources import BadInputError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    d = {"tasks": [{"name": "bad_vi", "language": "vi", "source": {"type": "jsonl", "files": [str(bad)]}}],
         "mixture": {"name": "bad_mix", "rates": {"vi": 1}}}
    tasks.register(load_data_config(write_config(tmp_path / "c.yaml", d)))
    with pytest.raises(BadInputError, match=r"bad\.jsonl:2: malformed JSON"):
        list(tasks.iterate_task(seqio.get_mixture_or_task("bad_vi")))


def test_tfds_source(tmp_path):
    import seqio
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from sailor2_jax.data import tasks
    from sailor2_jax.data.sources import COUNTS

    texts = ["Magandang umaga", "   ", "Salamat po"]
    builder = tfds.dataset_builders.TfDataBuilder(
        name="tiny_text", version="1.0.0", data_dir=str(tmp_path), split_datasets={
            "train": tf.data.Dataset.from_tensor_slices({"body": texts})},
        features=tfds.features.FeaturesDict({"body": tfds.features.Text()}))
    builder.download_and_prepare()
    d = {"tasks": [{"name": "tiny_tl", "language": "tl",
                    "source": {"type": "tfds", "name": "tiny_text:1.0.0", "data_dir": str(tmp_path),
                               "text_field": "body"}}],
         "mixture": {"name": "tfds_mix", "rates": {"tl": 1}}}
    tasks.register(load_data_config(write_config(tmp_path / "t.yaml", d)))
    task = seqio.get_mixture_or_task("tiny_tl")
    tok = get_vocabulary().tokenizer
    expected = {tuple(tok.encode(t).ids) + (EOS_ID,) for t in texts if t.strip()}
    got = {tuple(ex["tokens"]) for ex in tasks.iterate_task(task)}
    assert got == expected  # TFDS may order examples its own way
    assert COUNTS.pop(tasks.task_files(task)) == {"empty": 1}


def test_cache_command_then_loading_then_inspect(tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    assert main(["cache", "--config", "demo_stage1", f"cache_dir={cache_dir}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["tasks"]) == {f"udhr_{lang}" for lang in ("vi", "id", "th", "en", "zh", "my", "ms", "tl", "km")}

    from grain.sources import ArrayRecordDataSource

    from sailor2_jax.data.cache_format import decode, read_stats, shard_files

    for lang in ("vi", "my", "zh"):
        name = f"udhr_{lang}"
        stats = read_stats(cache_dir, name)
        expected = expected_documents(lang)
        assert stats["documents"] == len(expected) and stats["tokens"] == sum(map(len, expected))
        assert stats["language"] == lang and stats["skipped"] == {}
        files = shard_files(cache_dir, name)
        assert len(files) >= 1 and all(f.startswith(str(cache_dir)) for f in files)
        source = ArrayRecordDataSource(files)
        cached = [tuple(decode(source[i])) for i in range(len(source))]
        assert collections.Counter(cached) == collections.Counter(expected)

    # grain reads the cache; everything in the batches is tokens of the cached documents
    from sailor2_jax.data.config import Batching
    from sailor2_jax.data.loader import make_pretrain_iterator

    over = [f"cache_dir={cache_dir}", "loader.source=cache", "loader.shard_index=0", "loader.shard_count=1"]
    batch = next(make_pretrain_iterator("demo_stage1", Batching(batch_size=8, seq_len=128), overrides=over))
    vocab_of_cache = {t for lang in ("vi", "id", "th", "en", "zh", "my", "ms", "tl", "km")
                      for doc in expected_documents(lang) for t in doc}
    assert set(np.unique(batch["tokens"])) <= vocab_of_cache and batch["tokens"].shape == (8, 128)

    assert main(["inspect-data", "--config", "demo_stage1", "--batches", "60", "--batch-size", "8", "--seq-len", "128",
                 *over[:2]]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("target", "realised", "tokens_per_batch", "padding_fraction"):
        assert key in report
    assert report["tokens_per_batch"] == 8 * 128 and report["padding_fraction"] == 0.0
    assert set(report["realised"]) == set(report["target"])
    assert all(abs(report["realised"][k] - v) < 0.02 for k, v in report["target"].items())


def test_cache_skips_and_counts_bad_input_or_fails_naming_it(tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("\n".join(json.dumps({"text": f"document {i}"}) for i in range(5)) + "\n")
    bad.write_bytes(b'{"text": "ok"}\n{"text": ""}\n\xff\xfe\n{"no": 1}\n{broken\n')
    d = {"tasks": [{"name": "mixed_id", "language": "id",
                    "source": {"type": "jsonl", "files": [str(good), str(bad)]}}],
         "mixture": {"name": "skip_mix", "rates": {"id": 1}}, "cache_dir": str(tmp_path / "c"),
         "on_bad_input": "skip", "cache_shards": 2}
    cfg = write_config(tmp_path / "skip.yaml", d)
    assert main(["cache", "--config", str(cfg)]) == 0
    from sailor2_jax.data.cache_format import read_stats

    stats = read_stats(tmp_path / "c", "mixed_id")
    assert stats["documents"] == 6
    assert stats["skipped"] == {"empty": 1, "invalid_utf8": 1, "missing_field": 1, "malformed_line": 1}

    d.update(on_bad_input="error", cache_dir=str(tmp_path / "c2"))
    with pytest.raises(Exception, match=r"bad\.jsonl:2|bad\.jsonl:3"):
        from sailor2_jax.data.cache import cache

        cache(load_data_config(write_config(tmp_path / "err.yaml", d)))


def test_training_reads_the_cache_without_importing_beam():
    """Only `sailor2-jax cache` runs Beam; a training process reads the cache through data/cache_format.py and does
    not pay Beam's import."""
    code = "import sys, sailor2_jax.data.loader; sys.exit('apache_beam' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
