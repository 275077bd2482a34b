"""Who answers and who judges in the judge task (eval/judge.py): any OpenAI-compatible `/v1/chat/completions`
endpoint, our own engine, or a local reward model as a cheap stand-in judge.

- `Endpoint`: base URL + model + the name of the environment variable holding the API key (the key is read from the
  environment at call time and never printed, logged or stored); every call retried with exponential backoff
  (connection errors, timeouts, HTTP 408/409/429/5xx), a clear error naming the URL and status after the last try.
- `JudgeCache`: every judge answer appended to a JSONL file as soon as it arrives, keyed by sha256 of (judge,
  request): the request holds the prompt and both responses in their A/B order, so a rerun after a failure asks
  again only what was never answered. A torn last line (a crash mid-write) is ignored. Endpoint answers (the model
  under test, the reference) are cached the same way, by (endpoint, settings, conversation).
- `RewardJudge`: the reward model's scores of (prompt, response) for both sides; the margin (A − B) in reward units
  gives the outcome: |margin| < `tie` → A=B, < `much` → slight, else much. A stand-in for an LLM judge (its numbers
  are not Sea-WildBench's), for runs without one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
Messages = Sequence[Mapping[str, str]]


class EndpointError(RuntimeError):
    pass


class Endpoint:
    """An OpenAI-compatible chat-completions endpoint."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, *, timeout: float = 300.0,
                 retries: int = 5, backoff: float = 1.0, sleep: Callable[[float], None] = time.sleep):
        self.url = base_url.rstrip("/") + ("" if base_url.rstrip("/").endswith("/v1") else "/v1") + \
            "/chat/completions"
        self.model, self.api_key_env, self.timeout = model, api_key_env, timeout
        self.retries, self.backoff, self.sleep = retries, backoff, sleep
        if api_key_env and not os.environ.get(api_key_env):
            raise ValueError(f"the API key variable {api_key_env} is not set")

    @property
    def name(self) -> str:
        return f"{self.model}@{self.url}"

    def chat(self, messages: Messages, *, max_tokens: int, temperature: float = 0.0,
             json_mode: bool = False) -> tuple[str, str]:
        """(text, finish_reason) of one completion."""
        body = {"model": self.model, "messages": [dict(m) for m in messages], "max_tokens": max_tokens,
                "temperature": temperature}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = "Bearer " + os.environ[self.api_key_env]
        data = json.dumps(body, ensure_ascii=False).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(min(self.backoff * 2 ** (attempt - 1), 60.0))
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = json.loads(response.read())
                choice = answer["choices"][0]
                return choice["message"].get("content") or "", choice.get("finish_reason") or "stop"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code not in RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                raise EndpointError(f"{self.url}: not an OpenAI chat-completions answer ({e!r})") from None
        raise EndpointError(f"{self.url} (model {self.model}): {last} after {attempt + 1} tries")


class JudgeCache:
    def __init__(self, path: Path):
        self.path, self.entries = Path(path), {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry["output"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn line from a crash: asked again

    @staticmethod
    def key(judge: str, request: Messages) -> str:
        return hashlib.sha256(json.dumps([judge, list(map(dict, request))], ensure_ascii=False,
                                         sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, output: str) -> None:
        self.entries[key] = output
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps({"key": key, "output": output}, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)  # one write: a line is whole or torn, never interleaved
            os.fsync(fd)
        finally:
            os.close(fd)


class EndpointJudge:
    """An LLM judge behind an `Endpoint` (temperature 0, JSON mode, 1,024 tokens, as Sea-WildBench asks)."""

    def __init__(self, endpoint: Endpoint, cache: JudgeCache, *, max_tokens: int = 1024, concurrency: int = 4,
                 json_mode: bool = True):
        self.endpoint, self.cache, self.max_tokens = endpoint, cache, max_tokens
        self.concurrency, self.json_mode = concurrency, json_mode
        self.name, self.calls = endpoint.name, 0

    def judge(self, requests: Sequence[Messages], on_item: Callable[[], None] | None = None) -> list[str]:
        def one(request):
            key = JudgeCache.key(self.name, request)
            cached = self.cache.get(key)
            if cached is None:
                cached, _ = self.endpoint.chat(request, max_tokens=self.max_tokens, json_mode=self.json_mode)
                self.cache.put(key, cached)
                self.calls += 1
            if on_item:
                on_item()
            return cached
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            return list(pool.map(one, requests))


class RewardJudge:
    """A reward model's margin as a five-way outcome (module docstring)."""

    def __init__(self, reward_model, *, tie: float = 0.1, much: float = 1.0):
        if not 0 <= tie < much:
            raise ValueError(f"reward judge thresholds need 0 <= tie < much, got tie={tie}, much={much}")
        self.reward, self.tie, self.much = reward_model, tie, much
        self.name = f"reward:{reward_model.source}"

    def judge_pairs(self, conversations: Sequence[Messages], responses_a: Sequence[str],
                    responses_b: Sequence[str]) -> list[str]:
        convs = [[*map(dict, c), {"role": "assistant", "content": r}]
                 for c, r in zip([*conversations, *conversations], [*responses_a, *responses_b])]
        scores = self.reward.score(convs)
        n = len(responses_a)
        out = []
        for a, b in zip(scores[:n], scores[n:]):
            margin = float(a) - float(b)
            side = "A" if margin > 0 else "B"
            choice = "A=B" if abs(margin) < self.tie else side + ("+" if abs(margin) < self.much else "++")
            out.append(json.dumps({"reward_a": float(a), "reward_b": float(b), "choice": choice}))
        return out


# --- answerers ----------------------------------------------------------------------------------------------------

class EndpointAnswerer:
    """Answers from an endpoint, each cached (by endpoint, conversation and settings) as it arrives, so a rerun
    after a failure asks only what was never answered."""

    def __init__(self, endpoint: Endpoint, cache: JudgeCache, *, max_tokens: int, temperature: float = 0.0,
                 concurrency: int = 4):
        self.endpoint, self.cache, self.max_tokens, self.temperature = endpoint, cache, max_tokens, temperature
        self.concurrency, self.name, self.calls = concurrency, endpoint.name, 0

    def answer(self, conversations: Sequence[Messages]) -> list[tuple[str, bool]]:
        """(text, truncated by the length limit) per conversation."""
        settings = f"{self.name} max_tokens={self.max_tokens} temperature={self.temperature}"

        def one(messages):
            key = JudgeCache.key(settings, messages)
            cached = self.cache.get(key)
            if cached is None:
                text, finish = self.endpoint.chat(messages, max_tokens=self.max_tokens, temperature=self.temperature)
                cached = json.dumps({"text": text, "truncated": finish == "length"}, ensure_ascii=False)
                self.cache.put(key, cached)
                self.calls += 1
            answer = json.loads(cached)
            return answer["text"], answer["truncated"]
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            return list(pool.map(one, conversations))


class EngineAnswerer:
    """Our engine on an opened model: the chat template, greedy or sampled, stop at the model's EOS ids."""

    def __init__(self, opened, *, sampling, max_new_tokens: int, batch_size: int = 16, system: str | None = None,
                 seed: int = 0):
        from sailor2_jax.generate.engine import Generator
        from sailor2_jax.post.chat import SAILOR2_SYSTEM_PROMPT

        self.opened, self.generator = opened, Generator(opened.model, opened.mesh)
        self.sampling, self.max_new_tokens, self.batch_size, self.seed = sampling, max_new_tokens, batch_size, seed
        self.system = SAILOR2_SYSTEM_PROMPT if system is None else system
        self.name = opened.description

    def answer(self, conversations: Sequence[Messages]) -> list[tuple[str, bool]]:
        from tqdm import tqdm

        from sailor2_jax.post.chat import encode_batch

        prompts = [list(e.ids) for e in encode_batch(conversations, add_generation_prompt=True,
                                                     default_system=self.system, tokenizer=self.opened.tokenizer)]
        with tqdm(total=len(prompts), desc="answers", unit="prompt", file=sys.stderr) as bar:
            results = self.generator.generate(prompts, sampling=self.sampling, max_new_tokens=self.max_new_tokens,
                                              seed=self.seed, eos_ids=tuple(self.opened.eos_ids),
                                              batch_size=self.batch_size, on_batch=bar.update)
        out = []
        for (c,) in results:
            ids = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
            out.append((self.opened.tokenizer.decode(ids, skip_special_tokens=True), c.finish_reason == "length"))
        return out
