"""The Qwen2.5 model, its attention backends, block expansion and the Hugging Face bridge."""
