"""Reference computations of the evaluation tests, in `transformers` (fp32)."""

from __future__ import annotations

import numpy as np
import torch


def hf_logprobs(model, ids: list[int]) -> np.ndarray:
    """log p(ids[t] | ids[<t]) for t ≥ 1, from transformers."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()
