"""seqio Tasks (one per language and source) and Mixtures (one per stage), registered from a `DataConfig`.

Each Task yields `{"tokens": int32[n] ending in <|endoftext|>, "language": int32 index into LANGUAGES}` after
normalise → tokenise → append EOS. Only these seqio pieces are used: sources, preprocessors, registries. seqio's
feature converters are not: they treat id 0 as padding (Qwen's "!") and trim documents before packing; packing and
masks are built in grain instead (loader.py).

Tasks are registered under their config names; registering a config again replaces its tasks (a re-run, a test).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from sailor2_jax.data import mixture
from sailor2_jax.data.config import DataConfig, FileSource, OnBadInput, TaskConfig, TfdsSource
from sailor2_jax.data.sources import COUNTS, BadInputError, expand_files, read_documents
from sailor2_jax.data.tf_runtime import seqio, tf
from sailor2_jax.data.vocab import QwenVocabulary, get_vocabulary
from sailor2_jax.languages import LANGUAGE_INDEX, LANGUAGES

SPLIT = "train"
TOKENIZE_BATCH = 256  # documents per call into the Rust tokenizer: amortises the py_function hop


# --- sources ---------------------------------------------------------------------------------------------------

def _file_source(source: FileSource, on_bad: OnBadInput) -> seqio.DataSource:
    """One shard per file, so Beam (cache) and seqio's shard_info split work by file."""

    def generate(file: bytes) -> Iterator[str]:
        yield from read_documents(file.decode(), source, on_bad)

    def read_file(file: tf.Tensor) -> tf.data.Dataset:
        texts = tf.data.Dataset.from_generator(generate, args=(file,),
                                               output_signature=tf.TensorSpec([], tf.string))
        return texts.map(lambda t: {"text": t})

    # cycle_length=1: one file after another, so a task's order is deterministic and independent of thread timing.
    return seqio.FileDataSource(read_file_fn=read_file, split_to_filepattern={SPLIT: expand_files(source)},
                                cycle_length=1, block_length=1)


def _tfds_source(source: TfdsSource) -> seqio.DataSource:
    return seqio.TfdsDataSource(tfds_name=source.name, tfds_data_dir=source.data_dir, splits={SPLIT: source.split})


# --- preprocessors ---------------------------------------------------------------------------------------------

def _select_text(field: str, counter_key: str):
    """TFDS examples → {"text"}, empty documents skipped and counted (file sources do this while reading)."""

    def keep(text: tf.Tensor) -> bool:
        if text.numpy().strip():
            return True
        COUNTS.add(counter_key, "empty")
        return False

    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = ds.map(lambda ex: {"text": ex[field]})
        return ds.filter(lambda ex: tf.py_function(keep, [ex["text"]], Tout=tf.bool))

    return preprocess


def normalize(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Unicode NFC (one spelling for each accented Vietnamese letter), CRLF → LF, surrounding whitespace removed."""
    import tensorflow_text as tf_text  # registers the normalisation op only when a task is built

    def one(ex):
        text = tf_text.normalize_utf8(ex["text"], "NFC")
        text = tf.strings.regex_replace(text, "\r\n?", "\n")
        return {**ex, "text": tf.strings.strip(text)}

    return ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def tokenize(vocab: QwenVocabulary):
    """text → tokens, in batches of documents (one Rust call each) rather than one py_function per document."""

    def encode(texts: tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        ids = vocab.encode_batch([t.decode("utf-8") for t in texts.numpy()])
        lengths = np.asarray([len(x) for x in ids], np.int64)
        flat = np.concatenate(ids) if ids else np.zeros([0], np.int32)
        return flat.astype(np.int32), lengths

    def batch_fn(ex):
        flat, lengths = tf.py_function(encode, [ex["text"]], Tout=(tf.int32, tf.int64))
        flat.set_shape([None])
        lengths.set_shape([None])
        out = {k: v for k, v in ex.items() if k != "text"}
        out["tokens"] = tf.RaggedTensor.from_row_lengths(flat, lengths)
        return out

    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.batch(TOKENIZE_BATCH).map(batch_fn).unbatch()

    return preprocess


def append_eos(eos_id: int):
    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.map(lambda ex: {**ex, "tokens": tf.concat([ex["tokens"], tf.constant([eos_id], tf.int32)], 0)})

    return preprocess


def keep_long(min_tokens: int):
    """Only documents of at least `min_tokens` tokens (a long-context stage's long-document task)."""
    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.filter(lambda ex: tf.size(ex["tokens"]) >= min_tokens)

    return preprocess


def add_language(language: str):
    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.map(lambda ex: {**ex, "language": tf.constant(LANGUAGE_INDEX[language], tf.int32)})

    return preprocess


# --- registration ----------------------------------------------------------------------------------------------

def output_features(vocab: QwenVocabulary) -> dict[str, seqio.Feature]:
    return {
        "tokens": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
        "language": seqio.Feature(seqio.PassThroughVocabulary(len(LANGUAGES)), add_eos=False, dtype=tf.int32,
                                  rank=0),
    }


def build_task(task: TaskConfig, vocab: QwenVocabulary, on_bad: OnBadInput) -> seqio.Task:
    if isinstance(task.source, FileSource):
        source, first = _file_source(task.source, on_bad), []
    else:
        source = _tfds_source(task.source)
        first = [_select_text(task.source.text_field, f"tfds:{task.source.name}")]
    # add_language before tokenize: tokenize batches, and a constant per-example feature batches trivially
    steps = [*first, normalize, add_language(task.language), tokenize(vocab), append_eos(vocab.eos_id)]
    if task.min_tokens:
        steps.append(keep_long(task.min_tokens))
    return seqio.Task(task.name, source=source, preprocessors=steps, output_features=output_features(vocab))


def register(cfg: DataConfig) -> seqio.Mixture:
    """Register the stage's tasks (its own and replayed ones) and its mixture; return the mixture."""
    vocab = get_vocabulary(cfg.tokenizer)
    tasks, shares = mixture.resolve(cfg)
    for task in tasks.values():
        seqio.TaskRegistry.remove(task.name)
        seqio.TaskRegistry.add_provider(task.name, build_task(task, vocab, cfg.on_bad_input))
    seqio.MixtureRegistry.remove(cfg.mixture.name)
    mix = seqio.Mixture(cfg.mixture.name, [(name, share) for name, share in shares.items()])
    seqio.MixtureRegistry.add_provider(cfg.mixture.name, mix)
    return mix


def iterate_task(task: seqio.Task, shard: seqio.ShardInfo | None = None) -> Iterator[dict[str, np.ndarray]]:
    """A task's examples in order (no shuffle, one epoch), with reader errors re-raised as `BadInputError`."""
    ds = task.get_dataset(sequence_length=None, split=SPLIT, shuffle=False, shard_info=shard, num_epochs=1,
                          use_cached=False)
    try:
        yield from ds.as_numpy_iterator()
    except tf.errors.OpError as e:  # errors from a generator arrive wrapped; keep the "file:line: ..." message
        found = re.search(r"BadInputError: (.*)", e.message)
        if found:
            raise BadInputError(found.group(1)) from None
        raise


def task_files(task: seqio.Task) -> list[str]:
    """The files a task reads (counter keys); TFDS tasks have a single pseudo-file."""
    if isinstance(task.source, seqio.FileDataSource):
        return list(task.source.list_shards(SPLIT))
    return [f"tfds:{task.source.tfds_dataset.name}"]
