"""The engine, the app and uvicorn together: `Server.run()` blocks in the main thread (`sailor2-jax serve`: SIGTERM
stops accepting, lets in-flight requests finish, exits 0); `start()`/`stop()` run it in a thread (tests, the demo).

The port opens at once and /health answers 503 while every program compiles (the list is logged); requests that
arrive meanwhile wait in the queue.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

import uvicorn

from sailor2_jax.model.source import OpenModel
from sailor2_jax.serve.app import ServeConfig, build_app
from sailor2_jax.generate.speculative import DEFAULT_DRAFT_TOKENS
from sailor2_jax.serve.engine import DEFAULT_DECODE_STEPS, Engine
from sailor2_jax.serve.protocol import Defaults

log = logging.getLogger("sailor2_jax.serve")


class Server:
    def __init__(self, opened: OpenModel, *, model_name: str, host: str = "127.0.0.1", port: int = 8000,
                 max_slots: int = 16, max_len: int = 2048, max_queue: int = 256, buckets: list[int] | None = None,
                 decode_steps: int = DEFAULT_DECODE_STEPS, draft=None, draft_tokens: int = DEFAULT_DRAFT_TOKENS,
                 api_key: str | None = None, system: str | None = None, drain_seconds: float = 30.0,
                 log_level: str = "info"):
        """`draft`: None, "self" or an opened draft `Qwen2` (generate/speculative.py `open_draft`)."""
        self.engine = Engine(opened.model, opened.mesh, max_slots=max_slots, max_len=max_len, max_queue=max_queue,
                             buckets=buckets, decode_steps=decode_steps, draft=draft, draft_tokens=draft_tokens,
                             tokenizer_size=opened.tokenizer.get_vocab_size(with_added_tokens=True))
        config = ServeConfig(model_name=model_name, eos_ids=opened.eos_ids, defaults=Defaults.of(opened.hf_dir),
                             api_key=api_key, **({} if system is None else {"system": system}))
        self.config = config
        self.app = build_app(self.engine, opened.tokenizer, config)
        self.drain_seconds = drain_seconds
        self.uvicorn = uvicorn.Server(uvicorn.Config(self.app, host=host, port=port, log_level=log_level,
                                                     timeout_graceful_shutdown=int(drain_seconds), lifespan="off"))
        self.compiled: list[str] = []
        self._thread: threading.Thread | None = None

    def warm(self) -> None:
        """Compile every program, start the engine, then report ready."""
        start = time.perf_counter()
        self.compiled = self.engine.warm()
        self.engine.start()
        self.app.state.ready = True
        print(f"compiled {len(self.compiled)} programs in {time.perf_counter() - start:.1f}s: "
              f"{', '.join(self.compiled)}; ready", file=sys.stderr, flush=True)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; then drain and return."""
        warmer = threading.Thread(target=self.warm, name="serve-warm", daemon=True)
        warmer.start()
        try:
            self.uvicorn.run()
        finally:
            self.app.state.draining = True
            warmer.join()
            self.engine.shutdown(self.drain_seconds)

    # --- in a thread (tests, the demo) ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.uvicorn.servers[0].sockets[0].getsockname()[1]

    def start(self, timeout: float = 600) -> "Server":
        self._thread = threading.Thread(target=self.uvicorn.run, name="serve-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        self.warm()
        return self

    def stop(self) -> None:
        self.app.state.draining = True
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.drain_seconds + 5)
        self.engine.shutdown(self.drain_seconds)
