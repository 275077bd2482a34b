"""Decoding: the KV-cache engine, sampling, and what the generate/chat commands run."""
