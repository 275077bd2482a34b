"""fastText quality classifiers: planted good and bad text separated on held-out data (AUC ≥ 0.9), the held-out
metrics checked against their definitions, and selection of the top fraction per language with every record
accounted for, through Python and the CLI."""

import json
import random

import numpy as np
import pytest
from datatrove_helpers import read_records, write_jsonl

from sailor2_jax.cli import main
from sailor2_jax.embedded.synthetic import udhr_words
from sailor2_jax.data.quality import QualityModel, SelectConfig, TrainSettings, run_select, train
from sailor2_jax.data.quality.classifier import metrics, roc_auc

SPAM = {"th": "สล็อต บาคาร่า แทงบอล เครดิตฟรี คลิก สมัคร โปรโมชั่น casino bonus login".split(),
        "vi": "cá cược nổ hũ khuyến mãi đăng ký ngay click casino bonus tải app".split()}


def good(lang: str, rng: random.Random) -> str:
    """Prose: sentences of the language's UDHR words."""
    vocab = udhr_words(lang)
    sep = "" if lang == "th" else " "
    return "\n".join(sep.join(rng.choice(vocab) for _ in range(rng.randint(12, 24))) for _ in range(3))


def bad(lang: str, rng: random.Random) -> str:
    """Web junk: the same words cut up by spam and navigation tokens."""
    vocab = udhr_words(lang)
    tokens = [rng.choice(SPAM[lang]) if rng.random() < 0.4 else rng.choice(vocab) for _ in range(30)]
    return " | ".join(" ".join(tokens[i:i + 3]) for i in range(0, 30, 3))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    rng = random.Random(0)
    out = {}
    for lang in ("th", "vi"):
        write_jsonl(root / f"{lang}-pos.jsonl", [{"text": good(lang, rng)} for _ in range(300)])
        write_jsonl(root / f"{lang}-neg.jsonl", [{"text": bad(lang, rng)} for _ in range(300)] + ['{"text": 1}'])
        info = train([str(root / f"{lang}-pos.jsonl")], [str(root / f"{lang}-neg.jsonl")], lang,
                     root / f"{lang}.bin", TrainSettings(epoch=5, held_out=0.2, dim=32, bucket=50_000))
        out[lang] = (root / f"{lang}.bin", info)
    return out


def test_classifier_separates_planted_text(models):
    for lang, (path, info) in models.items():
        m = info["held_out_metrics"]
        assert m["examples"] == 120 and m["positives"] == 60  # 20 % of each class held out
        assert m["auc"] >= 0.9 and m["precision"] >= 0.8 and m["recall"] >= 0.8, (lang, m)
        assert info["examples"]["skipped_negative"] == 1  # the record without a string text
        saved = json.loads(path.with_name(path.name + ".json").read_text())
        assert saved["language"] == lang and saved["held_out_metrics"] == m
        rng = random.Random(1)  # fresh texts, scored by the saved model
        scores = QualityModel(path).score([good(lang, rng) for _ in range(50)] + [bad(lang, rng) for _ in range(50)])
        assert ((0 <= scores) & (scores <= 1)).all()
        assert roc_auc(scores, np.arange(100) < 50) >= 0.9


def test_metrics_follow_their_definitions():
    rng = np.random.default_rng(0)
    scores = rng.random(200).round(2)  # rounded: ties between classes
    labels = rng.random(200) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(scores, labels) == pytest.approx(pairs)
    m = metrics(scores, labels, 0.5)
    tp = ((scores >= 0.5) & labels).sum()
    assert m["precision"] == pytest.approx(tp / (scores >= 0.5).sum())
    assert m["recall"] == pytest.approx(tp / labels.sum())


def test_select_keeps_the_top_fraction_per_language(models, tmp_path):
    rng = random.Random(2)
    records = []
    for lang, n in (("th", 40), ("vi", 27)):
        for i in range(n):
            kind = "good" if i % 4 == 0 else "bad"
            text = good(lang, rng) if kind == "good" else bad(lang, rng)
            records.append({"id": f"{lang}{i}", "text": text, "language": lang, "kind": kind})
    for r in records[:5]:  # no `language`: --language th applies
        del r["language"]
    records += [{"id": "km", "text": "ភាសាខ្មែរ", "language": "km"}, {"id": "empty", "text": "", "language": "th"}]
    write_jsonl(tmp_path / "in" / "a.jsonl", records[:30])
    write_jsonl(tmp_path / "in" / "b.jsonl", records[30:] + ['{"broken'])
    config = SelectConfig(models=[models["th"][0], models["vi"][0]], keep=0.15, language="th",
                          executor={"tasks": 2}, progress=False)
    summary = run_select([str(tmp_path / "in")], tmp_path / "out", config)
    assert summary["documents"] == {"read": 70, "kept": 6 + 4, "rejected": 60, "balanced": True}
    assert {lang: (c["documents"], c["kept"]) for lang, c in summary["languages"].items()} == {
        "th": (40, 6), "vi": (27, 4)}  # round(0.15 × n)
    assert summary["unscored"] == {"km": {"no_model": 1}, "th": {"empty": 1}}
    for lang in ("th", "vi"):
        kept = read_records(tmp_path / "out" / "kept" / lang)
        rejected = read_records(tmp_path / "out" / "rejected" / lang)
        assert min(r["quality_score"] for r in kept) >= max(r["quality_score"] for r in rejected)
        assert all(r["kind"] == "good" and r["language"] == lang for r in kept)  # every field kept
        assert all(r["_rejection"]["reason"] == "below_cut" for r in rejected)
    unscored = read_records(tmp_path / "out" / "rejected" / "unscored")
    assert sorted(r["_rejection"]["reason"] for r in unscored) == ["empty", "malformed_json", "no_model"]
    assert (tmp_path / "out" / "quality.png").stat().st_size > 10_000


def test_cli(models, tmp_path, capsys):
    rng = random.Random(3)
    write_jsonl(tmp_path / "pos.jsonl", [{"text": good("vi", rng)} for _ in range(60)])
    write_jsonl(tmp_path / "neg.jsonl", [{"text": bad("vi", rng)} for _ in range(60)])
    rc = main(["quality", "train", "--language", "vi", "--positive", str(tmp_path / "pos.jsonl"), "--negative",
               str(tmp_path / "neg.jsonl"), "--output", str(tmp_path / "vi.bin"), "--epoch", "5", "--dim", "32",
               "--bucket", "50000"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["held_out"]["auc"] >= 0.9
    write_jsonl(tmp_path / "in.jsonl", [{"text": good("vi", rng), "language": "vi"} for _ in range(10)])
    rc = main(["quality", "select", "--model", str(tmp_path / "vi.bin"), "--input", str(tmp_path / "in.jsonl"),
               "--output-dir", str(tmp_path / "sel"), "--keep", "0.2"])
    assert rc == 0 and "vi: kept 2 of 10" in capsys.readouterr().out
    rc = main(["quality", "select", "--model", str(tmp_path / "vi.bin"), "--input", str(tmp_path / "in.jsonl"),
               "--output-dir", str(tmp_path / "sel"), "--keep", "1.5"])
    assert rc == 2 and "keep" in capsys.readouterr().err
