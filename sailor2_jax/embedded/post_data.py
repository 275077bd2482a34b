"""The embedded post-training data: conversations and preference pairs built from the UDHR passages of all 15
languages (`data/udhr/`), written to `data/post/sft.jsonl` and `data/post/preference.jsonl`.

    python -m sailor2_jax.embedded.post_data [--out data/post]

The passages gflanguages ships are excerpts of different articles in each language (not translations of each
other), so no task here pretends they are aligned; every answer is a true statement about, or a true part of, a
real passage. Tasks (a record's `domain`), per passage:
- `continue`: "Continue this passage of the UDHR in {language}: {first half}" → its second half (in that language);
- `identify`: "Which language is this text written in? {passage}" → "It is written in {language}.";
- `quote` (two turns): "Quote the passage ... that begins with “{first words}”" → the passage; "Which language was
  that?" → "{language}.".
Preference pairs, per passage, on the `continue` prompt: chosen the true second half; rejected the second half of
another passage of the same language (the wrong passage) or, for every other passage, of a passage in another
language (the wrong language). Deterministic: rerunning writes the same files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sailor2_jax.config import DATA_DIR
from sailor2_jax.languages import LANGUAGE_NAMES, LANGUAGES
from sailor2_jax.files import write_jsonl

UDHR = "the Universal Declaration of Human Rights"


def passages() -> dict[str, list[str]]:
    """language → its UDHR passages (data/udhr/<lang>.jsonl), in file order."""
    out = {}
    for lang in LANGUAGES:
        with open(DATA_DIR / "udhr" / f"{lang}.jsonl", encoding="utf-8") as f:
            out[lang] = [json.loads(line)["text"] for line in f if line.strip()]
    return out


def split_half(text: str) -> tuple[str, str]:
    """The passage cut near its middle: at the space closest to it when the script separates words, else at the
    middle character."""
    mid = len(text) // 2
    spaces = [i for i, c in enumerate(text) if c == " " and 0 < i < len(text) - 1]
    cut = min(spaces, key=lambda i: abs(i - mid)) if len(spaces) >= 4 else mid
    return text[:cut].rstrip(), text[cut:].lstrip()


def _opening(text: str) -> str:
    words = text.split()
    return " ".join(words[:6]) if len(words) >= 8 else text[:24]


def continue_prompt(lang: str, first: str) -> str:
    return f"Continue this passage of {UDHR} in {LANGUAGE_NAMES[lang]}:\n\n{first}"


def conversations(texts: dict[str, list[str]]) -> list[dict]:
    out = []
    for lang, docs in texts.items():
        name = LANGUAGE_NAMES[lang]
        for i, text in enumerate(docs):
            first, second = split_half(text)
            out.append({"messages": [{"role": "user", "content": continue_prompt(lang, first)},
                                     {"role": "assistant", "content": second}],
                        "language": lang, "domain": "continue", "id": f"udhr-{lang}-{i}-continue"})
            out.append({"messages": [{"role": "user", "content": f"Which language is this text written in?\n\n{text}"},
                                     {"role": "assistant", "content": f"It is written in {name}."}],
                        "language": lang, "domain": "identify", "id": f"udhr-{lang}-{i}-identify"})
            out.append({"messages": [
                {"role": "user", "content": f"Quote the passage of {UDHR} that begins with “{_opening(text)}”."},
                {"role": "assistant", "content": text},
                {"role": "user", "content": "Which language was that?"},
                {"role": "assistant", "content": f"{name}."}],
                "language": lang, "domain": "quote", "id": f"udhr-{lang}-{i}-quote"})
    return out


def preference_pairs(texts: dict[str, list[str]]) -> list[dict]:
    out = []
    langs = list(texts)
    for li, (lang, docs) in enumerate(texts.items()):
        for i, text in enumerate(docs):
            first, second = split_half(text)
            if i % 2 == 0 and len(docs) > 1:  # the wrong passage, same language
                other, kind = docs[(i + 1) % len(docs)], "wrong_passage"
            else:  # the wrong language: a passage of the next language
                other_docs = texts[langs[(li + 1) % len(langs)]]
                other, kind = other_docs[i % len(other_docs)], "wrong_language"
            out.append({"prompt": continue_prompt(lang, first), "chosen": second, "rejected": split_half(other)[1],
                        "language": lang, "rejected_kind": kind, "id": f"udhr-{lang}-{i}-pair"})
    return out


def write(out: Path) -> dict[str, int]:
    texts = passages()
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, records in (("sft", conversations(texts)), ("preference", preference_pairs(texts))):
        write_jsonl(out / f"{name}.jsonl", records)
        counts[name] = len(records)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR / "post")
    print(json.dumps(write(parser.parse_args().out)))


if __name__ == "__main__":
    main()
