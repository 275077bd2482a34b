"""Serving: an OpenAI-compatible HTTP API over a continuous-batching slot engine (`sailor2-jax serve`)."""
