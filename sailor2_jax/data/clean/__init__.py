"""Sailor2's data cleaning on datatrove: normalisation, URL and exact dedup, sailcraft heuristics, language ID,
MinHash near-dedup, exact-substring dedup, frequent-line removal, the per-document filters again on changed
texts and an optional KenLM filter, for all 15 Sailor2 languages.

Entry points: `run_clean(inputs, out_dir, config)` (what `sailor2-jax clean` runs) and `load_clean_config(name_or_path,
overrides)`.
"""

from sailor2_jax.data.clean.config import CleanConfig, load_clean_config
from sailor2_jax.data.clean.pipeline import run_clean
from sailor2_jax.data.stages.accounting import AccountingError

__all__ = ["AccountingError", "CleanConfig", "load_clean_config", "run_clean"]
