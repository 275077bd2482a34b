"""Translation of documents and preference records with NLLB/M2M100 models (CTranslate2 or transformers), as
datatrove stages on the executors of the cleaning pipeline: the stage-2 synthetic data and the off-policy preference
set of the Sailor2 recipe (recipe.md §2.3)."""

from sailor2_jax.data.translate.config import TranslateConfig, load_translate_config
from sailor2_jax.data.translate.pipeline import run_translate

__all__ = ["TranslateConfig", "load_translate_config", "run_translate"]
