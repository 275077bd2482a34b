"""Data side of sailor2_jax: cleaning, vocabularies, tasks and loaders."""
