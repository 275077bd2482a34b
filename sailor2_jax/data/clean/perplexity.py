"""sailcraft's KenLM perplexity filter (recipe.md §3.2, filter 8), from local model files only.

sailcraft downloads its KenLM and SentencePiece models from the Hub (`sail/sailcraft_lm_resource`); here both are
paths in the config, and nothing is fetched. `kenlm` is an optional dependency (`pip install kenlm`, it builds from
source): the filter raises a clear error at start-up when it is enabled without it.
"""

from __future__ import annotations

import regex

from sailor2_jax.data.clean.text import normalise_punctuation

_NON_PRINTING = regex.compile(r"[\p{Cc}\p{Cf}--[\n]]", flags=regex.V1)
_DIGITS = regex.compile(r"\d")


def kenlm_normalise(line: str) -> str:
    """sailcraft's pre-tokenisation normalisation: no non-printing characters, digits as 0, ASCII punctuation."""
    return _DIGITS.sub("0", normalise_punctuation(_NON_PRINTING.sub("", line))).strip()


class PerplexityModel:
    """Document perplexity PPL = 10^(−Σ log10 p / Σ (#pieces + 1)) over its lines (the +1 is the end of sentence)."""

    def __init__(self, kenlm_path: str, sentencepiece_path: str):
        try:
            import kenlm
        except ImportError as e:
            raise ImportError("the KenLM filter needs the `kenlm` package: pip install kenlm") from e
        import sentencepiece

        self.lm = kenlm.Model(str(kenlm_path))
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_path))

    def perplexity(self, text: str) -> float:
        log_score, length = 0.0, 0
        for line in text.split("\n"):
            line = kenlm_normalise(line)
            if not line:
                continue
            pieces = self.sp.encode(line, out_type=str)
            log_score += self.lm.score(" ".join(pieces), bos=True, eos=True)
            length += len(pieces) + 1
        return 10.0 ** (-log_score / length) if length else float("inf")
