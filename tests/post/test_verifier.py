"""The language-consistency verifier and pair construction, on real text (the embedded UDHR paragraphs)."""

import json

import pytest

from sailor2_jax.config import DATA_DIR
from sailor2_jax.post.verifier import (ALL_EQUAL, NO_CONSISTENT, LanguageVerifier, Pair, choose_pair,
                                       prompt_text)


def udhr(language: str, i: int = 0) -> str:
    lines = (DATA_DIR / "udhr" / f"{language}.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[i])["text"]


@pytest.fixture(scope="module")
def verifier():
    return LanguageVerifier()


@pytest.mark.parametrize("language", ["en", "zh", "vi", "th", "km", "my", "lo", "ilo"])
def test_same_language_is_consistent_other_is_not(verifier, language):
    other = "en" if language != "en" else "vi"
    assert verifier.verdict(udhr(language, 1), language).consistent
    wrong = verifier.verdict(udhr(other, 1), language)
    assert not wrong.consistent and wrong.language == other


def test_expected_language_from_field_else_from_the_prompt(verifier):
    chat = [{"role": "system", "content": udhr("en")}, {"role": "user", "content": udhr("vi")}]
    assert prompt_text(chat) == udhr("vi")
    assert verifier.expected_language({}, chat) == "vi"                 # lid.176 on the last user message
    assert verifier.expected_language({}, udhr("th")) == "th"
    assert verifier.expected_language({"language": "fil"}, udhr("en")) == "tl"  # the record's field wins
    with pytest.raises(ValueError, match="no user message"):
        verifier.expected_language({}, [{"role": "system", "content": "x"}])


def test_translation_task_expects_the_target_language(verifier):
    record = {"task": "translation", "language": "en", "target_language": "th"}
    prompt = "Translate into Thai:\n" + udhr("en", 2)
    expected = verifier.expected_language(record, prompt)
    assert expected == "th"
    assert verifier.verdict(udhr("th", 2), expected).consistent
    assert not verifier.verdict(udhr("en", 2), expected).consistent   # echoing the source is wrong here
    with pytest.raises(ValueError, match="target_language"):
        verifier.expected_language({"task": "translation"}, prompt)


def test_malay_indonesian_pair_is_lenient_by_default(verifier):
    # lid.176 labels this Indonesian paragraph `id`; for a Malay prompt it counts as consistent unless strict
    assert verifier.verdict(udhr("id"), "ms").consistent
    strict = LanguageVerifier(verifier.identifier, lenient_pairs=False)
    assert not strict.verdict(udhr("id"), "ms").consistent
    assert strict.verdict(udhr("ms"), "ms").consistent      # pycld2 settles the real Malay text for `ms`


def test_empty_response_is_inconsistent(verifier):
    v = verifier.verdict("  \n", "en")
    assert v.language == "und" and not v.consistent


def test_choose_pair_rules():
    # chosen: highest consistent; rejected: lowest consistent when all are consistent
    assert choose_pair([0.1, 0.9, -0.3, 0.5], [True] * 4) == Pair(1, 2, by_language=False)
    # an inconsistent response is the rejected one even when scored above the consistent ones
    assert choose_pair([0.1, 0.9, 2.0, 0.5], [True, True, False, True]) == Pair(1, 2, by_language=True)
    # the best-scored response is inconsistent: the best consistent one is chosen, the worst inconsistent rejected
    assert choose_pair([3.0, 0.2, 1.0, 2.5], [False, True, True, False]) == Pair(2, 3, by_language=True)
    # ties: the first in sample order
    assert choose_pair([1.0, 1.0, 0.0, 0.0], [True] * 4) == Pair(0, 2, by_language=False)
    assert choose_pair([1.0, 1.0, 1.0], [True, True, True]) == ALL_EQUAL
    assert choose_pair([1.0, 2.0], [False, False]) == NO_CONSISTENT
    with pytest.raises(ValueError, match="at least two"):
        choose_pair([1.0], [True])


def test_pairs_from_real_responses(verifier):
    """A Thai prompt with four sampled answers: two Thai, one English, one Vietnamese."""
    prompt = [{"role": "user", "content": udhr("th", 0)}]
    responses = [udhr("th", 1), udhr("en", 1), udhr("th", 3), udhr("vi", 1)]
    expected = verifier.expected_language({}, prompt)
    verdicts = [verifier.verdict(r, expected) for r in responses]
    assert [v.language for v in verdicts] == ["th", "en", "th", "vi"]
    pair = choose_pair([0.5, 4.0, 1.5, 3.0], [v.consistent for v in verdicts])
    assert pair == Pair(2, 3, by_language=True)       # the best Thai answer over the worst wrong-language one
    # nothing in Thai: no pair
    none = [verifier.verdict(r, expected).consistent for r in (udhr("en", 1), udhr("vi", 1))]
    assert choose_pair([1.0, 0.0], none) == NO_CONSISTENT
