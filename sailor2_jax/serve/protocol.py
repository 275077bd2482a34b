"""The OpenAI request schema (vLLM's as the de facto spec, docs/serving.md §1.4), the model's generation defaults,
and OpenAI's error shape.

Unknown fields are ignored (clients send `user`, `response_format`, ...); a known field of the wrong type or out of
range is a 400 whose message and `param` name it. Fields left unset take the model directory's
generation_config.json values (`temperature`, `top_p`, `top_k`, `repetition_penalty`, `max_new_tokens`), as vLLM
does by default, then OpenAI's defaults (temperature 1, top_p 1; max_tokens: what the slot has left).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from sailor2_jax.generate.sampling import SamplingConfig


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, description="vLLM's extra; -1 and 0: off")
    repetition_penalty: float | None = Field(None, gt=0.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2 ** 32)
    stream: bool = False
    stream_options: StreamOptions | None = None
    return_token_ids: bool = False  # vLLM's extra: each choice carries its generated ids

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Common):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def top(self) -> int | None:
        """None: no logprobs; else how many alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Common):
    prompt: str | list[int] = Field(min_length=1)
    logprobs: int | None = Field(None, ge=0, le=20)  # the legacy API: the number of alternatives

    @property
    def limit(self) -> int | None:
        return self.max_tokens

    @property
    def top(self) -> int | None:
        return self.logprobs


def parse(model: type[BaseModel], raw: bytes) -> Any:
    """The request body as `model`, or a 400 naming the field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"malformed JSON body: {e}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise APIError(400, f"{field}: {err['msg']} (got {json.dumps(err.get('input'))[:80]})",
                       param=field) from None


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI messages → {role, content} strings: content parts of type text are joined (images are refused)."""
    out = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise APIError(400, f"messages[{i}].content[{j}]: only text parts are supported",
                                   param=f"messages.{i}.content")
                parts.append(part["text"])
            content = "".join(parts)
        out.append({"role": m.get("role"), "content": content})
    return out


class Defaults(BaseModel):
    """Sampling defaults: the model's generation_config.json over OpenAI's."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_tokens: int | None = None

    @classmethod
    def of(cls, hf_dir: Path | None) -> "Defaults":
        file = None if hf_dir is None else Path(hf_dir) / "generation_config.json"
        if file is None or not file.is_file():
            return cls()
        config = json.loads(file.read_text())
        keys = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}
        return cls(**{ours: config[theirs] for theirs, ours in keys.items() if config.get(theirs) is not None})

    def sampling(self, req: _Common) -> SamplingConfig:
        top_k = self.top_k if req.top_k is None else req.top_k
        return SamplingConfig(temperature=self.temperature if req.temperature is None else req.temperature,
                              top_p=self.top_p if req.top_p is None else req.top_p, top_k=max(top_k, 0),
                              repetition_penalty=(self.repetition_penalty if req.repetition_penalty is None
                                                  else req.repetition_penalty))
