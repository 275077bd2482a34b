"""`sailor2-jax serve` as a process: /health is 503 until compiled, the bearer key from --api-key-env is required and
never printed, and SIGTERM stops accepting, finishes the request in flight and exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest
import requests
from jobs import cli_cmd, cpu_env, free_port

KEY = "k3y-that-must-not-leak"


@pytest.mark.slow
def test_serve_requires_the_key_and_drains_on_sigterm(tiny):
    port = free_port()
    cmd = cli_cmd("serve", "--model", str(tiny[1]), "--port", str(port), "--max-slots", "2", "--max-len", "64",
                  "--prefill-buckets", "64", "--dtype", "float32", "--mesh", "1,1,1", "--api-key-env", "SERVE_KEY",
                  "--served-model-name", "tiny", "--system", "Be brief.", "--drain-seconds", "20")
    proc = subprocess.Popen(cmd, env=cpu_env(1, SERVE_KEY=KEY), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, seen_503 = time.monotonic() + 120, False
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not become healthy"
            try:
                status = requests.get(f"{base}/health", timeout=1).status_code
            except requests.ConnectionError:
                status = None
            seen_503 |= status == 503
            if status == 200:
                break
            time.sleep(0.1)
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 40, "temperature": 0, "stream": True}
        assert requests.post(f"{base}/v1/completions", json=body).status_code == 401
        lines, first = [], threading.Event()

        def stream():
            with requests.post(f"{base}/v1/completions", json=body, stream=True,
                               headers={"Authorization": f"Bearer {KEY}"}) as r:
                for line in r.iter_lines(decode_unicode=True):
                    if line:
                        lines.append(line)
                        first.set()
        reader = threading.Thread(target=stream)
        reader.start()
        assert first.wait(30)
        proc.send_signal(signal.SIGTERM)
        reader.join(60)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert lines[-1] == "data: [DONE]"
    reasons = [json.loads(x[6:])["choices"][0]["finish_reason"] for x in lines[:-1]]
    assert reasons[-1] == "length" and sum(r is None for r in reasons) == 40  # every token, then the end
    assert "compiled 4 programs" in output and KEY not in output  # prefill, insert, decode for 1 and 2 slots
    assert "decode[1 of 2 slots x 8 steps" in output
    assert seen_503, "/health answered 200 before the programs were compiled"
