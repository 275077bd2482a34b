"""fastText quality classifiers per language and top-fraction selection (recipe.md §2.3): `train` (held-out
precision, recall and AUC) and `run_select` (datatrove stages on the executors of `clean`)."""

from sailor2_jax.data.quality.classifier import QualityModel, TrainSettings, train
from sailor2_jax.data.quality.select import SelectConfig, load_select_config, run_select

__all__ = ["QualityModel", "SelectConfig", "TrainSettings", "load_select_config", "run_select", "train"]
