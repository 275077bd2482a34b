"""Serving the exported DPO model: `sailor2-jax serve`'s server started in this process on 127.0.0.1, three chats
(en, vi, th) sent through the official `openai` client (the Thai one streamed), the answers and the server's
/metrics totals printed, then the server stopped (a tiny random model trained for a few steps writes gibberish:
the API is the point)."""

from __future__ import annotations

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "serve the exported DPO model over OpenAI's API (en, vi, th through the openai client; th streamed)"
CHATS = {"en": "What are three famous dishes of Southeast Asia?", "vi": "Hãy giới thiệu ngắn gọn về Hà Nội.",
         "th": "สวัสดีครับ"}
MAX_TOKENS = 24


def run(ctx: Context) -> StageResult:
    import jax
    import openai
    import requests

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.source import ModelSource, open_model
    from sailor2_jax.serve.server import Server
    from sailor2_jax.sharding import make_mesh

    path = ctx.out / "hf_final"
    ctx.console.print(f"sailor2-jax serve --model {path} --port 0 --max-slots 4 --max-len 256 "
                      "--prefill-buckets 128,256  (in this process, one device)")
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    opened = open_model(ModelSource(path=str(path)), mesh=mesh)
    server = Server(opened, model_name="sailor2-demo", port=0, max_slots=4, max_len=256, buckets=[128, 256],
                    log_level="warning", drain_seconds=5).start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)
        answers, usage = {}, 0
        for lang, text in CHATS.items():
            kw = dict(model="sailor2-demo", messages=[{"role": "user", "content": text}], max_tokens=MAX_TOKENS,
                      temperature=0)
            if lang == "th":
                chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                             **kw))
                answers[lang] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                usage += chunks[-1].usage.completion_tokens
                whole = client.chat.completions.create(**kw)  # the same request, not streamed
                usage += whole.usage.completion_tokens
                streamed_equal = whole.choices[0].message.content == answers[lang]
            else:
                r = client.chat.completions.create(**kw)
                answers[lang] = r.choices[0].message.content
                usage += r.usage.completion_tokens
            ctx.console.print(f"[bold]{lang}[/]{' (streamed)' if lang == 'th' else ''}: {answers[lang]!r}")
        metrics = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
        health = requests.get(f"http://127.0.0.1:{server.port}/health", timeout=10).status_code
    finally:
        server.stop()
    totals = {name: sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))
              for name in ("sailor2_requests_total", "sailor2_prompt_tokens_total", "sailor2_completion_tokens_total")}
    ctx.console.print("/metrics totals: " + ", ".join(f"{k} {v:g}" for k, v in totals.items()))
    return StageResult(
        {"programs": server.compiled, "answers": answers, "metrics": totals},
        {"the server was healthy once compiled": health == 200,
         "the streamed Thai answer equals the same request not streamed": streamed_equal,
         "/metrics counts every completion token the responses reported":
             totals["sailor2_completion_tokens_total"] == usage,
         "/metrics counts the four chat requests": totals["sailor2_requests_total"] == 4})
