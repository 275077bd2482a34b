"""A fastText quality classifier per language (recipe.md §2.3): Sailor2 trained one per language on 10K positive
examples (machine-translated high-quality English) and 10K negative ones (raw web text), scored documents with
P(positive) and kept the top 10–20 %.

Text goes to fastText as the cleaning pipeline's words (`clean.text.words`: lowercased, punctuation stripped from
word ends, ICU words for th, lo, km, my and zh, which fastText could not split), joined by spaces on one line.
Training holds out a stratified share of the examples and reports precision, recall and F1 at P = 0.5 and the ROC
AUC on it. The model is fastText's own binary format (not pickle); `MODEL.json` beside it records the language,
settings and metrics, and is how `select` knows which language a model scores.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
from pydantic import Field

from sailor2_jax.config import Config
from sailor2_jax.languages import canonical_language
from sailor2_jax.data.clean.params import SAILCRAFT
from sailor2_jax.data.stages.inputs import list_input_files, read_rows
from sailor2_jax.data.clean.text import words

POSITIVE, NEGATIVE = "__label__hq", "__label__lq"


class TrainSettings(Config):
    """fastText `supervised` settings; the defaults sit in the ranges recipe.md §2.3 recommends (word bigrams, dim
    100–256, 5–25 epochs, lr 0.1–0.5). `bucket` hashes the bigrams: fastText's 2M buckets make a 1 GB model at
    dim 128; 200K serves 20K training documents with a 100 MB one."""

    dim: int = Field(128, gt=0)
    epoch: int = Field(10, gt=0)
    lr: float = Field(0.2, gt=0)
    word_ngrams: int = Field(2, gt=0)
    min_count: int = Field(2, gt=0)
    bucket: int = Field(200_000, gt=0, description="hash buckets of the word n-grams")
    threads: int = Field(1, gt=0, description="fastText threads (more is faster, not reproducible)")
    seed: int = 0
    held_out: float = Field(0.1, gt=0, lt=1, description="share held out for the metrics")
    max_per_class: int = Field(10_000, gt=0, description="examples per class")


def features(text: str, lang: str) -> str:
    """The classifier's view of a text: its words, space-separated, on one line."""
    return " ".join(words(text, SAILCRAFT.get(lang, SAILCRAFT["default"]), lang))


def read_texts(inputs: list[str], text_key: str = "text") -> tuple[list[str], int]:
    """The `text_key` strings of every record of `inputs`, and how many lines or rows had none."""
    texts, skipped = [], 0
    for path in list_input_files(inputs):
        for _, _, record, _ in read_rows(path, text_key):
            value = record.get(text_key) if record else None
            if isinstance(value, str) and value.strip():
                texts.append(value)
            else:
                skipped += 1
    return texts, skipped


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a positive outscores a negative (ties count half), from the
    ranks of the scores (Mann–Whitney U)."""
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # ties share their average rank
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
    predicted = scores >= threshold
    tp, fp = int((predicted & labels).sum()), int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"examples": len(labels), "positives": int(labels.sum()), "threshold": threshold,
            "precision": precision, "recall": recall, "f1": f1, "auc": roc_auc(scores, labels),
            "accuracy": float((predicted == labels).mean()) if len(labels) else float("nan")}


class QualityModel:
    """A trained classifier: `score(texts)` gives P(positive) per text."""

    def __init__(self, path: str | os.PathLike):
        import fasttext

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"quality model not found: {path}")
        meta = path.with_name(path.name + ".json")
        if not meta.is_file():
            raise FileNotFoundError(f"{meta} missing: it names the model's language (written by `quality train`)")
        self.info = json.loads(meta.read_text())
        self.language = self.info["language"]
        fasttext.FastText.eprint = lambda *a, **k: None  # the "load_model deprecated" banner, per task
        self.model = fasttext.load_model(str(path))

    def score(self, texts: list[str]) -> np.ndarray:
        lines = [features(t, self.language) for t in texts]
        labels, probs = self.model.predict(lines, k=2)
        out = np.empty(len(texts))
        for i, (labs, ps) in enumerate(zip(labels, probs)):
            d = dict(zip(labs, ps))
            out[i] = min(1.0, max(0.0, float(d.get(POSITIVE, 1.0 - d.get(NEGATIVE, 1.0)))))
        return out


def _fit(data: str, out: str, options: dict, queue) -> None:
    """fastText training in a process of its own (see `_fit_isolated`); a diverging run is retried with half the
    learning rate. Puts the rate used, or the error, on `queue`."""
    import fasttext

    try:
        for attempt in range(4):
            try:
                fasttext.train_supervised(input=data, **options).save_model(out)
                queue.put(options["lr"])
                return
            except RuntimeError as e:  # "Encountered NaN": the step diverged
                if "NaN" not in str(e) or attempt == 3:
                    raise
                options = {**options, "lr": options["lr"] / 2}
    except Exception as e:  # noqa: BLE001 — handed to the parent, which raises it
        queue.put(e)


def _fit_isolated(data: Path, out: Path, options: dict) -> float:
    """Train in a fresh (spawned) process: fastText-numpy2's training is not reproducible, and diverges to NaN, in
    a process that has loaded a quantized model (such as lid.176.ftz, which the cleaning pipeline loads): measured
    here, 3 of 5 identical runs failed after loading it and none before. Returns the learning rate used."""
    import multiprocessing as mp
    from queue import Empty

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_fit, args=(str(data), str(out), options, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not proc.is_alive():
                raise RuntimeError(f"fastText training died (exit code {proc.exitcode})") from None
    proc.join()
    if isinstance(result, Exception):
        raise result
    return result


def train(positive: list[str], negative: list[str], language: str, out_path: str | os.PathLike,
          settings: TrainSettings | None = None, text_key: str = "text") -> dict:
    """Train on the records of the `positive` and `negative` inputs (files or directories), write the model and its
    JSON beside it (atomically), and return the held-out metrics."""
    s = settings or TrainSettings()
    lang = canonical_language(language)
    if lang not in SAILCRAFT:
        raise ValueError(f"unknown language {language!r}")
    rng = random.Random(s.seed)
    pos, pos_skipped = read_texts(positive, text_key)
    neg, neg_skipped = read_texts(negative, text_key)
    if len(pos) < 2 or len(neg) < 2:
        raise ValueError(f"need at least 2 positive and 2 negative texts with `{text_key}`; got {len(pos)} and "
                         f"{len(neg)}")
    examples = {POSITIVE: rng.sample(pos, min(len(pos), s.max_per_class)),
                NEGATIVE: rng.sample(neg, min(len(neg), s.max_per_class))}
    train_rows, test_rows = [], []
    for label, texts in examples.items():  # stratified: the same held-out share of each class
        n_test = max(1, round(s.held_out * len(texts)))
        test_rows += [(label, t) for t in texts[:n_test]]
        train_rows += [(label, t) for t in texts[n_test:]]
    rng.shuffle(train_rows)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        data = Path(tmp) / "train.txt"
        data.write_text("".join(f"{label} {features(t, lang)}\n" for label, t in train_rows), encoding="utf-8")
        staged = Path(tmp) / out.name
        lr = _fit_isolated(data, staged, dict(dim=s.dim, epoch=s.epoch, lr=s.lr, wordNgrams=s.word_ngrams,
                                              minCount=s.min_count, bucket=s.bucket, thread=s.threads, seed=s.seed,
                                              loss="softmax", verbose=0))
        info = {"language": lang, "labels": {"positive": POSITIVE, "negative": NEGATIVE},
                "settings": {**s.model_dump(), "lr_used": lr},
                "examples": {"positive": len(examples[POSITIVE]), "negative": len(examples[NEGATIVE]),
                             "train": len(train_rows), "held_out": len(test_rows),
                             "skipped_positive": pos_skipped, "skipped_negative": neg_skipped}}
        staged_meta = Path(tmp) / (out.name + ".json")
        staged_meta.write_text(json.dumps(info, indent=1))
        staged.replace(out)
        staged_meta.replace(out.with_name(out.name + ".json"))
    scores = QualityModel(out).score([t for _, t in test_rows])
    info["held_out_metrics"] = metrics(scores, np.array([label == POSITIVE for label, _ in test_rows]))
    meta = out.with_name(out.name + ".json")
    tmp_meta = meta.with_name(meta.name + ".tmp")
    tmp_meta.write_text(json.dumps(info, indent=1))
    tmp_meta.replace(meta)
    return info
