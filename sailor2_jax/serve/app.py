"""The OpenAI-compatible HTTP API (FastAPI) in front of the slot engine.

POST /v1/chat/completions (the chat template of post/chat.py), POST /v1/completions, GET /v1/models, GET /health
(503 until every program is compiled and warm, and while draining), GET /metrics (Prometheus).

A request becomes a `Job`: its engine `Request` and, per sample, a `TextStream` (serve/text.py) that the engine
thread feeds token by token; events cross to the event loop through an asyncio queue. Streaming sends OpenAI's
chunks as server-sent events ending with `data: [DONE]`; a client that goes away (stream closed, or a non-streaming
client disconnected) cancels its job, which frees its slots at the engine's next step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import tokenizers
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sailor2_jax.post.chat import SAILOR2_SYSTEM_PROMPT, encode
from sailor2_jax.serve.engine import Closed, Engine, QueueFull, Request, Token
from sailor2_jax.serve.protocol import APIError, ChatRequest, CompletionRequest, Defaults, chat_messages, parse
from sailor2_jax.serve.text import TextStream, TokenBytes
from sailor2_jax.tokenizer import IM_END_ID


@dataclasses.dataclass
class ServeConfig:
    model_name: str
    eos_ids: tuple[int, ...]
    defaults: Defaults = dataclasses.field(default_factory=Defaults)
    system: str | None = SAILOR2_SYSTEM_PROMPT  # the system prompt of chats that have none (post/chat.py's default_system)
    api_key: str | None = None


class Metrics:
    def __init__(self, engine: Engine):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("sailor2_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("sailor2_prompt_tokens", "prompt tokens of served requests", registry=r)
        self.completion_tokens = Counter("sailor2_completion_tokens", "generated tokens", registry=r)
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
        self.ttft = Histogram("sailor2_time_to_first_token_seconds", "request arrival to first token", registry=r,
                              buckets=buckets)
        self.tpot = Histogram("sailor2_time_per_output_token_seconds", "mean time between a sample's tokens after "
                              "the first", registry=r, buckets=buckets)
        Gauge("sailor2_queue_depth", "requests waiting for slots", registry=r).set_function(lambda: engine.queue_depth)
        Gauge("sailor2_slots_in_use", "slots decoding", registry=r).set_function(lambda: engine.slots_in_use)
        if engine.speculative:  # totals since start (gauges read from the engine; they only grow)
            Gauge("sailor2_draft_tokens", "draft tokens the model checked", registry=r).set_function(
                lambda: engine.drafted)
            Gauge("sailor2_draft_accepted_tokens", "draft tokens the model accepted", registry=r).set_function(
                lambda: engine.accepted)
            Gauge("sailor2_draft_acceptance", "accepted / checked draft tokens", registry=r).set_function(
                lambda: engine.accepted / max(engine.drafted, 1))


@dataclasses.dataclass
class Sample:
    stream: TextStream
    text: list[str] = dataclasses.field(default_factory=list)
    ids: list[int] = dataclasses.field(default_factory=list)
    tokens: list[Token] = dataclasses.field(default_factory=list)
    times: list[float] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None


class Job:
    """One HTTP request's samples; `on_token`/`on_finish` run on the engine thread, `events` is read by the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, table: TokenBytes, stops: list[str], n: int):
        self.loop, self.table, self.events = loop, table, asyncio.Queue()
        self.samples = [Sample(TextStream(table, stops)) for _ in range(n)]
        self.arrived = time.perf_counter()

    def _send(self, event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def on_token(self, s: int, token: Token) -> str | None:
        sample = self.samples[s]
        sample.times.append(time.perf_counter())
        sample.ids.append(token.id)
        sample.tokens.append(token)
        text = "" if token.eos else sample.stream.push(token.id)
        sample.text.append(text)
        self._send(("token", s, text, token))
        return "stop" if sample.stream.stopped else None

    def on_finish(self, s: int, reason: str) -> None:
        sample = self.samples[s]
        tail = sample.stream.finish() if reason != "abort" else ""
        sample.text.append(tail)
        sample.finish_reason = reason
        self._send(("finish", s, tail, reason))


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def build_app(engine: Engine, tokenizer: tokenizers.Tokenizer, config: ServeConfig) -> FastAPI:
    app = FastAPI(title="sailor2-jax", docs_url=None, redoc_url=None)
    app.state.ready = False      # set once every program is compiled and warm
    app.state.draining = False
    table = TokenBytes(tokenizer)
    metrics = Metrics(engine)
    app.state.metrics = metrics

    @app.middleware("http")
    async def guard(request: HTTPRequest, call_next):
        path = request.url.path
        if config.api_key and path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
                metrics.requests.labels(path, "401").inc()
                return error_response(APIError(401, "missing or wrong API key (Authorization: Bearer KEY)",
                                               kind="authentication_error"))
        response = await call_next(request)
        if path.startswith("/v1"):
            metrics.requests.labels(path, str(response.status_code)).inc()
        return response

    @app.exception_handler(APIError)
    async def api_error(request: HTTPRequest, e: APIError):
        return error_response(e)

    @app.get("/health")
    async def health():
        if app.state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not app.state.ready:
            return JSONResponse({"status": "compiling"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": 0,
                                            "owned_by": "sailor2-jax", "max_model_len": engine.max_len}]}

    def check_model(name: str | None) -> None:
        if name is not None and name != config.model_name:
            raise APIError(404, f"model: {name!r} is not served here (GET /v1/models lists {config.model_name!r})",
                           param="model", kind="not_found_error")

    @app.post("/v1/chat/completions")
    async def chat(http: HTTPRequest):
        req = parse(ChatRequest, await http.body())
        check_model(req.model)
        try:
            prompt = encode(chat_messages(req.messages), add_generation_prompt=True, default_system=config.system,
                            tokenizer=tokenizer).ids.tolist()
        except ValueError as e:  # it names the message and field
            raise APIError(400, str(e), param="messages") from None
        eos = tuple(dict.fromkeys(config.eos_ids + (IM_END_ID,)))  # a chat turn ends with <|im_end|>
        return await run(http, req, prompt, eos, chat=True)

    @app.post("/v1/completions")
    async def completions(http: HTTPRequest):
        req = parse(CompletionRequest, await http.body())
        check_model(req.model)
        if isinstance(req.prompt, str):
            prompt = tokenizer.encode(req.prompt, add_special_tokens=False).ids
        else:
            prompt = req.prompt
            if any(t < 0 or t >= engine.programs.vocab for t in prompt):
                raise APIError(400, f"prompt: token ids must lie in [0, {engine.programs.vocab})", param="prompt")
        return await run(http, req, prompt, config.eos_ids, chat=False)

    async def run(http: HTTPRequest, req, prompt: list[int], eos_ids: tuple[int, ...], chat: bool):
        if app.state.draining:
            raise APIError(503, "the server is shutting down", kind="service_unavailable")
        left = engine.max_len - len(prompt)
        if left < 1:
            raise APIError(400, f"messages: the prompt has {len(prompt)} tokens; the server's --max-len is "
                                f"{engine.max_len}" if chat else
                           f"prompt: {len(prompt)} tokens; the server's --max-len is {engine.max_len}",
                           param="messages" if chat else "prompt")
        limit = req.limit or (min(config.defaults.max_tokens, left) if config.defaults.max_tokens else left)
        field = "max_completion_tokens" if chat and req.max_completion_tokens else "max_tokens"
        job = Job(asyncio.get_running_loop(), table, req.stops, req.n)
        try:
            sampling = config.defaults.sampling(req)
        except ValueError as e:
            raise APIError(400, f"sampling: {e}") from None
        top = req.top
        work = Request(prompt=list(prompt), max_tokens=limit, on_token=job.on_token, on_finish=job.on_finish,
                       sampling=sampling, n=req.n, seed=req.seed, eos_ids=eos_ids, top_logprobs=top or 0)
        try:
            engine.check(len(prompt), limit, req.n, sampling)
        except ValueError as e:
            name = str(e).split(":")[0]
            raise APIError(400, str(e).replace("max_tokens", field, 1), param=field if name == "max_tokens" else name)
        try:
            engine.submit(work)
        except QueueFull as e:
            raise APIError(429, f"too many requests: {e}", kind="rate_limit_error") from None
        except Closed as e:
            raise APIError(503, str(e), kind="service_unavailable") from None
        metrics.prompt_tokens.inc(len(prompt))
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        if req.stream:
            return StreamingResponse(stream(job, work, req, ident, chat, len(prompt), top),
                                     media_type="text/event-stream")
        try:
            await wait_all(http, job)
        finally:
            if not all(work.done):
                work.cancel()
                engine.wake()
        return JSONResponse(response(job, req, ident, chat, len(prompt), top))

    async def wait_all(http: HTTPRequest, job: Job) -> None:
        left = len(job.samples)
        while left:
            try:
                kind, s, *_ = await asyncio.wait_for(job.events.get(), timeout=0.5)
            except TimeoutError:
                if await http.is_disconnected():
                    raise APIError(499, "client disconnected") from None
                continue
            if kind == "finish":
                left -= 1
                observe(job, s)

    def observe(job: Job, s: int) -> None:
        sample = job.samples[s]
        metrics.completion_tokens.inc(len(sample.ids))
        if sample.times:
            if s == 0:
                metrics.ttft.observe(sample.times[0] - job.arrived)
            if len(sample.times) > 1:
                metrics.tpot.observe((sample.times[-1] - sample.times[0]) / (len(sample.times) - 1))

    def logprob_entry(token: Token, top: int, chat: bool) -> dict:
        b = table[token.id]
        alts = [{"token": table.text(i), "logprob": lp, "bytes": list(table[i])} for i, lp in token.top[:top]]
        return {"token": table.text(token.id), "logprob": token.logprob, "bytes": list(b), "top_logprobs": alts}

    def legacy_logprobs(tokens: list[Token], top: int) -> dict:
        return {"tokens": [table.text(t.id) for t in tokens], "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [{table.text(i): lp for i, lp in t.top[:top]} for t in tokens], "text_offset": []}

    def usage(job: Job, prompt_len: int) -> dict:
        completion = sum(len(s.ids) for s in job.samples)
        return {"prompt_tokens": prompt_len, "completion_tokens": completion,
                "total_tokens": prompt_len + completion}

    def response(job: Job, req, ident: str, chat: bool, prompt_len: int, top: int | None) -> dict:
        choices = []
        for i, sample in enumerate(job.samples):
            text = "".join(sample.text)
            reason = sample.finish_reason if sample.finish_reason != "abort" else "abort"
            if chat:
                choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": text},
                                          "logprobs": None, "finish_reason": reason}
                if top is not None:
                    choice["logprobs"] = {"content": [logprob_entry(t, top, chat) for t in sample.tokens]}
            else:
                choice = {"index": i, "text": text, "finish_reason": reason,
                          "logprobs": None if top is None else legacy_logprobs(sample.tokens, top)}
            if req.return_token_ids:
                choice["token_ids"] = sample.ids
            choices.append(choice)
        return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": config.model_name, "choices": choices, "usage": usage(job, prompt_len)}

    async def stream(job: Job, work: Request, req, ident: str, chat: bool, prompt_len: int,
                     top: int | None) -> AsyncIterator[str]:
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list[dict], **extra) -> str:
            body = {"id": ident, "object": kind, "created": created, "model": config.model_name, "choices": choices,
                    **extra}
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        def piece(s: int, text: str, token: Token | None = None, reason: str | None = None,
                  role: bool = False) -> dict:
            if chat:
                delta = {"role": "assistant", "content": text} if role else ({"content": text} if text else {})
                out = {"index": s, "delta": delta, "logprobs": None, "finish_reason": reason}
                if top is not None and token is not None:
                    out["logprobs"] = {"content": [logprob_entry(token, top, chat)]}
            else:
                out = {"index": s, "text": text, "logprobs": None, "finish_reason": reason}
                if top is not None and token is not None:
                    out["logprobs"] = legacy_logprobs([token], top)
            if req.return_token_ids and token is not None:
                out["token_ids"] = [token.id]
            return out

        try:
            if chat:
                yield chunk([piece(s, "", role=True) for s in range(len(job.samples))])
            left = len(job.samples)
            while left:
                event, s, text, extra = await job.events.get()
                if event == "token":
                    if text or top is not None or req.return_token_ids:
                        yield chunk([piece(s, text, token=extra)])
                else:
                    left -= 1
                    observe(job, s)
                    if text:
                        yield chunk([piece(s, text)])
                    yield chunk([piece(s, "", reason=extra)])
            if req.include_usage:
                yield chunk([], usage=usage(job, prompt_len))
            yield "data: [DONE]\n\n"
        finally:
            if not all(work.done):  # the client went away: free the slots
                work.cancel()
                engine.wake()

    return app
