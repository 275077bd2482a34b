"""Passkey retrieval (needle in a haystack) in the 15 Sailor2 languages, from the embedded UDHR text.

Each record is one (language, length, depth, sample): a haystack of real UDHR sentences in the language (the
embedded `data/udhr/` excerpts and `data/eval/udhr_perplexity.jsonl` paragraphs, cycled until the prompt reaches
`length` tokens), a needle sentence in the same language that states a random five-digit pass key, put at the
sentence boundary nearest `depth` (0: the start, 1: the end) of the haystack, and a question in the same language
whose answer starts right after it (base models complete it). Scored by exact match: the first number the model
generates is the key. As in Mohtashami & Jaggi (2023) and the needle-in-a-haystack plots, results are a depth ×
length grid, drawn as a heat map (over all languages, and one panel per language).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sailor2_jax.config import DATA_DIR
from sailor2_jax.languages import LANGUAGES

# (needle, question): the needle states the key twice, the question ends where the key goes
NEEDLES: dict[str, tuple[str, str]] = {
    "en": ("The pass key is {key}. Remember it. {key} is the pass key.", "What is the pass key? The pass key is"),
    "zh": ("通行密码是{key}。记住它。{key}是通行密码。", "通行密码是什么？通行密码是"),
    "vi": ("Mật mã là {key}. Hãy nhớ nó. {key} là mật mã.", "Mật mã là gì? Mật mã là"),
    "id": ("Kata sandinya adalah {key}. Ingatlah. {key} adalah kata sandinya.",
           "Apa kata sandinya? Kata sandinya adalah"),
    "th": ("รหัสผ่านคือ {key} จำไว้ให้ดี {key} คือรหัสผ่าน", "รหัสผ่านคืออะไร รหัสผ่านคือ"),
    "ms": ("Kata laluannya ialah {key}. Ingatlah. {key} ialah kata laluannya.",
           "Apakah kata laluannya? Kata laluannya ialah"),
    "my": ("စကားဝှက်မှာ {key} ဖြစ်သည်။ မှတ်ထားပါ။ {key} သည် စကားဝှက် ဖြစ်သည်။", "စကားဝှက်မှာ ဘာလဲ။ စကားဝှက်မှာ"),
    "tl": ("Ang password ay {key}. Tandaan mo ito. Ang {key} ang password.", "Ano ang password? Ang password ay"),
    "km": ("ពាក្យសម្ងាត់គឺ {key}។ ចងចាំវា។ {key} គឺជាពាក្យសម្ងាត់។", "តើពាក្យសម្ងាត់គឺជាអ្វី? ពាក្យសម្ងាត់គឺ"),
    "lo": ("ລະຫັດຜ່ານແມ່ນ {key}. ຈື່ໄວ້. {key} ແມ່ນລະຫັດຜ່ານ.", "ລະຫັດຜ່ານແມ່ນຫຍັງ? ລະຫັດຜ່ານແມ່ນ"),
    "jv": ("Tembung sandhine yaiku {key}. Elingana. {key} yaiku tembung sandhine.",
           "Apa tembung sandhine? Tembung sandhine yaiku"),
    "su": ("Kecap konci na nyaéta {key}. Émutan. {key} nyaéta kecap konci na.",
           "Naon kecap konci na? Kecap konci na nyaéta"),
    "ceb": ("Ang password mao ang {key}. Hinumdumi kini. Ang {key} mao ang password.",
            "Unsa ang password? Ang password mao ang"),
    "war": ("An password amo an {key}. Hinumdumi ini. An {key} amo an password.",
            "Ano an password? An password amo an"),
    "ilo": ("Ti password ket {key}. Laglagipem. Ti {key} ti password.", "Ania ti password? Ti password ket"),
}
assert set(NEEDLES) == set(LANGUAGES)

# a sentence ends after one of these (Latin, CJK, Burmese, Khmer); Thai and Lao mark sentences with a space
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；။។៕])\s*")
_NO_PUNCTUATION = {"th", "lo"}


def sentences(language: str) -> list[str]:
    """The embedded UDHR text of `language` as sentences (long ones in phrases), in order."""
    texts = [json.loads(line)["text"] for line in open(DATA_DIR / "udhr" / f"{language}.jsonl", encoding="utf-8")]
    texts += [r["text"] for r in map(json.loads, open(DATA_DIR / "eval" / "udhr_perplexity.jsonl", encoding="utf-8"))
              if r.get("language") == language]
    out = []
    for text in texts:
        for line in text.split("\n"):
            parts = line.split(" ") if language in _NO_PUNCTUATION else _SENTENCE_END.split(line)
            out += [piece for p in parts if p.strip() for piece in _phrases(p.strip())]
    if not out:
        raise ValueError(f"passkey: no embedded text for language {language!r}")
    return out


def _phrases(sentence: str, size: int = 160) -> list[str]:
    """A long sentence cut at spaces into pieces of about `size` characters, so the needle's depth is placed
    finely (Khmer and Burmese write long sentences with spaces between phrases)."""
    if len(sentence) <= size or " " not in sentence:
        return [sentence]
    pieces, current = [], ""
    for word in sentence.split(" "):
        current = f"{current} {word}" if current else word
        if len(current) >= size:
            pieces.append(current)
            current = ""
    return pieces + ([current] if current else [])


def _joiner(language: str) -> str:
    return "" if language == "zh" else " "


def build_prompt(language: str, length: int, depth: float, key: str, encode: Callable[[str], list[int]],
                 units: Sequence[str]) -> tuple[str, int]:
    """The prompt (haystack, needle at `depth`, question) of at most `length` tokens, and its token count.

    Sentences are cycled in order while they fit a token budget (one that does not fit is passed over); sentences tokenize differently alone than joined,
    so the budget is corrected from the joined prompt's real count (a few rounds) until it is within 3% below."""
    needle_text, question = NEEDLES[language]
    needle = needle_text.format(key=key)
    join = _joiner(language)
    sizes = [len(encode(u)) for u in units]
    budget = length - len(encode(needle)) - len(encode(question)) - 2
    if budget <= 0:
        raise ValueError(f"passkey: length {length} leaves no room for a haystack in {language!r}")
    best: tuple[str, int] = ("", 0)
    for _ in range(6):
        hay, used, i, skipped = [], 0, 0, 0
        while skipped < len(units):  # a sentence too long for what is left is passed over for a shorter one
            n = sizes[i % len(units)] + 1
            if used + n <= budget:
                hay.append(units[i % len(units)])
                used, skipped = used + n, 0
            else:
                skipped += 1
            i += 1
        before = np.concatenate([[0], np.cumsum([len(encode(h)) + 1 for h in hay])])  # tokens before each boundary
        cut = int(np.argmin(np.abs(before - depth * before[-1])))
        prompt = join.join(hay[:cut] + [needle] + hay[cut:]) + "\n" + question
        tokens = len(encode(prompt))
        if tokens <= length and tokens > best[1]:
            best = (prompt, tokens)
        if 0.97 * length <= tokens <= length:
            break
        budget = int(budget * length / tokens) - (1 if tokens > length else 0)
    if not best[0]:
        raise ValueError(f"passkey: no haystack of at most {length} tokens in {language!r}")
    return best


def records(languages: Sequence[str], lengths: Sequence[int], depths: Sequence[float], samples: int, seed: int,
            encode: Callable[[str], list[int]]) -> list[dict]:
    """One record per language × length × depth × sample; keys drawn from (seed, language, length, depth, sample)."""
    out = []
    for li, lang in enumerate(languages):
        if lang not in NEEDLES:
            raise ValueError(f"passkey: unknown language {lang!r} (known: {', '.join(NEEDLES)})")
        units = sentences(lang)
        for length in lengths:
            for di, depth in enumerate(depths):
                for s in range(samples):
                    rng = np.random.default_rng([seed, li, length, di, s])
                    key = str(int(rng.integers(10_000, 100_000)))
                    prompt, tokens = build_prompt(lang, length, depth, key, encode, units)
                    out.append({"language": lang, "length": length, "depth": depth, "sample": s, "key": key,
                                "tokens": tokens, "prompt": prompt})
    return out


def answer(output: str) -> str | None:
    """The first (ASCII) number of a model's output."""
    m = re.search(r"\d+", output)
    return m.group(0) if m else None


def grid(rows: Sequence[dict], lengths: Sequence[int], depths: Sequence[float], language: str | None = None
         ) -> np.ndarray:
    """Exact match (0-100) per [depth, length] over the rows of `language` (all when None); NaN for an empty cell."""
    out = np.full((len(depths), len(lengths)), np.nan)
    for di, d in enumerate(depths):
        for li, n in enumerate(lengths):
            cell = [r["correct"] for r in rows if r["depth"] == d and r["length"] == n
                    and (language is None or r["language"] == language)]
            if cell:
                out[di, li] = 100.0 * float(np.mean(cell))
    return out


def plot_heatmap(rows: Sequence[dict], lengths: Sequence[int], depths: Sequence[float], path: Path,
                 title: str = "passkey retrieval") -> Path:
    """The depth × length heat map (green: found, red: missed), over all languages and per language."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    languages = list(dict.fromkeys(r["language"] for r in rows))
    panels = [(None, "all languages")] + [(lang, lang) for lang in languages]
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for k, (ax, (lang, name)) in enumerate(zip(axes.flat, panels)):
        values = grid(rows, lengths, depths, lang)
        image = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
        for (di, li), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(li, di, f"{v:.0f}", ha="center", va="center", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(lengths)), [f"{n // 1024}K" if n >= 1024 else str(n) for n in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=7)
        if k // cols == nrows - 1 or k + cols >= len(panels):
            ax.set_xlabel("context length (tokens)", fontsize=7)
        if k % cols == 0:
            ax.set_ylabel("needle depth", fontsize=7)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="exact match (%)")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
