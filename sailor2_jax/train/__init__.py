"""Training: objectives, the jitted step family, optimiser and schedules, checkpoints, the loop, multi-host start-up.

Entry point for Python callers: `sailor2_jax.train.loop.train(cfg, output_dir, data_iter=..., init_model=...)`.
"""
