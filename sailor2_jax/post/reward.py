"""Reward scores of chat conversations: one function, two backends.

`RewardModel.score(conversations)` renders each conversation (a prompt and the assistant turn that answers it) with
**the reward model's own chat template** — `tokenizer_config.json`'s `chat_template`, through `transformers`'
`apply_chat_template`, as every HF reward model card scores — and returns one fp32 score per conversation. The
forward pass is the backend's:

- `jax`: the project's Qwen2 with a one-score head (a `Qwen2ForSequenceClassification` directory, imported onto the
  mesh and sharded like the policy: `sailor2_jax.model`'s reward-model import and scoring function);
- `transformers`: any Hugging Face sequence-classification reward model in PyTorch (how a user runs
  Skywork-Reward-Gemma-2-27B or a Llama reward model on GPUs): `AutoModelForSequenceClassification` from a local
  directory (never `trust_remote_code`), one label, scored on the last non-padding token as the model defines it.

Both take the same token ids, so a checkpoint scored by both backends gets the same scores (tested to 1e-4).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

Backend = Literal["jax", "transformers"]
Messages = Sequence[Mapping[str, str]]


class Scorer(Protocol):
    def __call__(self, ids: Sequence[Sequence[int]]) -> np.ndarray: ...


def load_reward_tokenizer(model_dir: str | Path):
    """The reward model's tokenizer (`transformers`), which must carry a chat template."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"reward model directory not found: {model_dir}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if not tokenizer.chat_template:
        raise ValueError(f"{model_dir}: the tokenizer has no chat_template (tokenizer_config.json); reward models "
                         "score the conversation as their template renders it")
    return tokenizer


class RewardModel:
    """Scores conversations that end with an assistant turn (module docstring)."""

    def __init__(self, tokenizer, scorer: Scorer, source: str):
        self.tokenizer, self.scorer, self.source = tokenizer, scorer, source

    def encode(self, conversations: Sequence[Messages]) -> list[list[int]]:
        """Each conversation rendered by the reward model's chat template, as token ids."""
        out = []
        for i, messages in enumerate(conversations):
            if not messages or messages[-1]["role"] != "assistant":
                raise ValueError(f"conversation {i}: a reward model scores a conversation ending with the assistant "
                                 "turn")
            ids = self.tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=True)
            out.append(list(ids["input_ids"] if isinstance(ids, Mapping) else ids))
        return out

    def score(self, conversations: Sequence[Messages]) -> np.ndarray:
        """fp32 [n] scores, in order."""
        if not conversations:
            return np.zeros(0, np.float32)
        return np.asarray(self.scorer(self.encode(conversations)), np.float32)


def transformers_scorer(model_dir: str | Path, pad_id: int, *, batch_size: int = 8, device: str | None = None,
                        dtype: str | None = None, progress: bool = True) -> Scorer:
    """A PyTorch sequence-classification model as a `Scorer`: right-padded batches of similar lengths (longest
    first), logits[:, 0] in fp32.
    Default device: CUDA when available (the model spread over every GPU through `device_map="auto"` when
    `accelerate` is installed), else CPU; default dtype bf16 on CUDA, fp32 on CPU."""
    import torch
    from transformers import AutoModelForSequenceClassification

    cuda = torch.cuda.is_available()
    device = device or ("cuda" if cuda else "cpu")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    kwargs = {}
    if device == "cuda" and torch.cuda.device_count() > 1 and importlib.util.find_spec("accelerate"):
        kwargs["device_map"] = "auto"  # a 27B reward model spread over the GPUs
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=getattr(torch, dtype),
                                                               local_files_only=True, **kwargs)
    if model.config.num_labels != 1:
        raise ValueError(f"{model_dir}: a reward model has one label (score), this one has {model.config.num_labels}")
    if model.config.pad_token_id is None:  # transformers needs it to find each row's last token in a batch
        model.config.pad_token_id = pad_id
    pad_id = model.config.pad_token_id
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    first = next(model.parameters()).device

    @torch.inference_mode()
    def batch(ids: Sequence[Sequence[int]]) -> np.ndarray:
        width = max(len(x) for x in ids)
        tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            tokens[r, :len(x)] = torch.as_tensor(x)
            mask[r, :len(x)] = 1
        logits = model(input_ids=tokens.to(first), attention_mask=mask.to(first)).logits
        return logits[:, 0].float().cpu().numpy()

    def score(ids: Sequence[Sequence[int]]) -> np.ndarray:
        from tqdm import tqdm

        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.zeros(len(ids), np.float32)
        for start in tqdm(range(0, len(order), batch_size), desc="reward scores", unit="batch", leave=False,
                          disable=not progress):
            chunk = order[start:start + batch_size]
            out[chunk] = batch([ids[i] for i in chunk])
        return out
    return score


def jax_scorer(model_dir: str | Path, *, mesh=None, batch_size: int = 8, dtype: str = "float32",
               progress: bool = True) -> Scorer:
    """The project's Qwen2 reward model (model/reward.py), imported onto `mesh` (default: rows over every device)
    and sharded like the policy; batches by length, jitted."""
    from sailor2_jax.model.reward import score_sequences
    from sailor2_jax.model.source import ModelSource, open_model

    opened = open_model(ModelSource(path=str(model_dir), dtype=dtype, head="reward"), mesh)
    model, mesh = opened.model, opened.mesh
    return lambda ids: score_sequences(model, [np.asarray(x, np.int32) for x in ids], mesh, batch_size=batch_size,
                                       progress=progress)


def load_reward_model(model_dir: str | Path, backend: Backend = "jax", *, batch_size: int = 8,
                      dtype: str | None = None, mesh=None, device: str | None = None,
                      progress: bool = True) -> RewardModel:
    """The reward model in `model_dir` behind the chosen backend. `mesh` (jax): where the model is sharded;
    `device` (transformers): the torch device. `dtype`: default fp32 (jax), bf16 on CUDA / fp32 on CPU
    (transformers)."""
    tokenizer = load_reward_tokenizer(model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if backend == "transformers":
        scorer = transformers_scorer(model_dir, pad_id, batch_size=batch_size, device=device, dtype=dtype,
                                     progress=progress)
    elif backend == "jax":
        scorer = jax_scorer(model_dir, mesh=mesh, batch_size=batch_size, dtype=dtype or "float32",
                            progress=progress)
    else:
        raise ValueError(f"reward backend {backend!r}: expected jax or transformers")
    return RewardModel(tokenizer, scorer, f"{model_dir} ({backend})")
