"""The KenLM perplexity filter with local models built here: a SentencePiece model trained in-process on UDHR
English and a unigram ARPA file written from its piece counts, so the expected perplexity is computed by hand."""

import io
import math
import random
from collections import Counter

import pytest

from sailor2_jax.data.clean.perplexity import PerplexityModel, kenlm_normalise
from sailor2_jax.embedded.synthetic import synthetic_document, udhr_lines

kenlm = pytest.importorskip("kenlm", reason="`kenlm` is optional (pip install kenlm builds it from source); "
                                            "the filter itself raises a clear ImportError without it")
spm = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    lines = [kenlm_normalise(x) for x in udhr_lines("en")]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines * 5), model_writer=buf, vocab_size=120,
                                   hard_vocab_limit=False, minloglevel=2)
    sp_path = folder / "en.sp.model"
    sp_path.write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    counts = Counter(p for line in lines for p in sp.encode(line, out_type=str))
    counts["</s>"] = len(lines)
    total = sum(counts.values()) + 1  # +1: the mass left for <unk>
    logp = {w: math.log10(c / total) for w, c in counts.items()}
    logp["<unk>"] = math.log10(1 / total)
    # KenLM needs order ≥ 2: one bigram (<s> </s>, only used by empty lines, which are skipped) and zero backoffs
    # keep every score unigram
    arpa = ["\\data\\", f"ngram 1={len(logp) + 1}", "ngram 2=1", "", "\\1-grams:", "-99\t<s>\t0"]
    arpa += [f"{v:.6f}\t{w}\t0" for w, v in logp.items()]
    arpa += ["", "\\2-grams:", "-0.5\t<s> </s>", "", "\\end\\", ""]
    lm_path = folder / "en.arpa"
    lm_path.write_text("\n".join(arpa))
    return lm_path, sp_path, sp, logp


def test_perplexity_matches_the_definition(models):
    lm_path, sp_path, sp, logp = models
    model = PerplexityModel(str(lm_path), str(sp_path))
    text = "Everyone has the right to rest.\nNo one shall be held in slavery."
    log_sum, n = 0.0, 0
    for line in text.split("\n"):
        pieces = sp.encode(kenlm_normalise(line), out_type=str)
        log_sum += sum(logp.get(p, logp["<unk>"]) for p in pieces) + logp["</s>"]
        n += len(pieces) + 1
    assert model.perplexity(text) == pytest.approx(10 ** (-log_sum / n), rel=1e-4)


def test_pipeline_drops_high_perplexity(clean, models):
    lm_path, sp_path, _, _ = models
    rng = random.Random(0)
    english = " ".join(udhr_lines("en"))
    foreign = "Qwxz vbnm plkj hgfd trew " * 20 + english[:200]  # mostly out of the model's vocabulary
    records = [{"id": "en", "text": english, "language": "en"},
               {"id": "noise", "text": foreign, "language": "en"},
               {"id": "th", "text": synthetic_document("th", rng, 200), "language": "th"}]
    model = PerplexityModel(str(lm_path), str(sp_path))
    cutoff = math.sqrt(model.perplexity(english) * model.perplexity(foreign))  # between the two
    assert model.perplexity(english) < cutoff < model.perplexity(foreign)
    # substring dedup off: it would cut the noise's repeats before KenLM sees them
    summary, kept, rejected = clean(
        records, heuristics=False, lid=False, substring_dedup={"enabled": False},
        languages={"en": {"perplexity_max": cutoff}},
        kenlm={"enabled": True, "models": {"en": {"kenlm": str(lm_path), "sentencepiece": str(sp_path)}}})
    assert {r["id"] for r in kept} == {"en", "th"}  # th has no model: it passes unchanged
    assert [(r["id"], r["_rejection"]["step"], r["_rejection"]["reason"]) for r in rejected] == [
        ("noise", "kenlm", "perplexity_too_high")]
    assert summary["steps"]["kenlm"]["en"]["removed"] == {"perplexity_too_high": 1}
