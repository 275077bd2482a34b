"""`sailor2-jax onpolicy` end to end on tiny random models (a policy and a reward model with the real vocabulary):
every prompt accounted for, scores equal to `transformers`' on the written pairs, the pair rules hold on what was
sampled, and the pairs load as DPO batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reward_helpers import policy_dir, reward_dir, udhr

from sailor2_jax.cli import main
from sailor2_jax.post.preference_data import load_preferences
from sailor2_jax.post.conversation_files import file_stamps
from sailor2_jax.post.reward import load_reward_model
from sailor2_jax.post.verifier import LanguageVerifier


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("onpolicy")
    prompts = [{"id": 0, "prompt": udhr("th", 0)[:120]},
               {"id": 1, "messages": [{"role": "user", "content": udhr("vi", 0)[:120]}], "language": "vi"},
               {"id": 2, "prompt": "Translate into Khmer: " + udhr("en", 1)[:100], "task": "translation",
                "target_language": "km"},
               {"id": 3, "prompt": udhr("id", 0)[:120], "language": "id"},
               {"id": 4, "prompt": udhr("en", 0)[:120]}]
    lines = [json.dumps(p, ensure_ascii=False) for p in prompts]
    lines.insert(2, json.dumps({"prompt": 5}))                                   # malformed: not a string
    lines.append(json.dumps({"prompt": "x", "task": "translation"}))             # malformed: no target_language
    (root / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return root, policy_dir(root / "policy"), reward_dir(root / "rm", seed=1)


def run(root, policy, rm, out, *extra):
    assert main(["onpolicy", "--policy", str(policy), "--reward-model", str(rm), "--prompts",
                 str(root / "prompts.jsonl"), "--samples", "4", "--output", str(out), "--max-new-tokens", "12",
                 "--temperature", "1.0", "--seed", "3", "--dtype", "float32", *extra]) == 0
    pairs = [json.loads(x) for x in out.read_text().splitlines()]
    return pairs, json.loads((out.parent / f"{out.name}.summary.json").read_text())


def test_onpolicy_round(setup):
    root, policy, rm = setup
    pairs, summary = run(root, policy, rm, root / "pairs.jsonl", "--reward-backend", "jax")
    assert summary["read"] == 7 and summary["malformed"] == 2
    assert summary["read"] == summary["malformed"] + summary.get("pairs", 0) + sum(
        summary.get(r, 0) for r in ("no_consistent_response", "all_scores_equal"))
    assert len(pairs) == summary["pairs"] >= 1           # seed 3: one pair, its rejected picked for its language
    reference = load_reward_model(rm, "transformers", dtype="float32", progress=False)
    verifier = LanguageVerifier()
    expected = {0: "th", 1: "vi", 2: "km", 3: "id", 4: "en"}
    for p in pairs:
        assert p["language"] == expected[p["id"]] and len(p["all_scores"]) == len(p["languages"]) == 4
        prompt = p["prompt"] if isinstance(p["prompt"], list) else [{"role": "user", "content": p["prompt"]}]
        got = reference.score([prompt + [{"role": "assistant", "content": p[s]}] for s in ("chosen", "rejected")])
        np.testing.assert_allclose(got, [p["chosen_score"], p["rejected_score"]], rtol=1e-4, atol=1e-5)
        scores, ok = np.asarray(p["all_scores"]), np.asarray(p["consistent"])
        assert p["chosen_score"] == scores[ok].max()
        assert verifier.verdict(p["chosen"], p["language"]).consistent
        if not ok.all():
            assert p["rejected_for"] == "language" and p["rejected_score"] == scores[~ok].min()
            assert not verifier.verdict(p["rejected"], p["language"]).consistent
        else:
            assert p["rejected_for"] == "score" and p["rejected_score"] == scores.min()

    # without the verifier every sample counts as consistent: every prompt with distinct scores gives a pair
    loose, summary = run(root, policy, rm, root / "loose.jsonl", "--language-check", "off",
                         "--reward-backend", "transformers")
    assert summary.get("pairs", 0) == len(loose) == 5 - summary.get("all_scores_equal", 0)
    for p in loose:
        assert p["languages"] is None and p["rejected_for"] == "score"
        assert p["chosen_score"] == max(p["all_scores"]) and p["rejected_score"] == min(p["all_scores"])
    # the same samples (same seed): the two rounds differ only in the pairing
    both = {p["id"]: p for p in pairs}
    for p in loose:
        if p["id"] in both:
            np.testing.assert_allclose(p["all_scores"], both[p["id"]]["all_scores"], rtol=1e-4, atol=1e-5)

    # the pairs are DPO training data as they are
    encoded, acc = load_preferences(file_stamps([str(root / "loose.jsonl")]), 256, "truncate", "sailor2",
                                    progress=False)
    assert acc.balanced and acc.read == len(loose) and len(encoded) + sum(acc.rejected.values()) == len(loose)


def test_onpolicy_refuses_one_sample(setup, capsys):
    root, policy, rm = setup
    assert main(["onpolicy", "--policy", str(policy), "--reward-model", str(rm), "--prompts",
                 str(root / "prompts.jsonl"), "--samples", "1", "--output", str(root / "x.jsonl")]) != 0
    assert "--samples 1" in capsys.readouterr().err


def test_onpolicy_samples_through_a_draft(setup, capsys):
    """--draft-model: the policy's samples come through speculative decoding (here the policy drafts for itself as
    a separate model, so nearly every draft token is accepted); the round completes and reports the acceptance."""
    root, policy, rm = setup
    _, summary = run(root, policy, rm, root / "drafted.jsonl", "--draft-model", str(policy), "--draft-tokens", "3")
    assert summary["read"] == 7 and summary["malformed"] == 2
    printed = capsys.readouterr().out
    acceptance = float(printed.split("acceptance ")[1].split()[0])
    assert acceptance > 0.9 and "γ = 3" in printed
