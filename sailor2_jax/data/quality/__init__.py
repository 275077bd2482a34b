"""fastText quality classifiers per language and top-fraction selection (recipe.md §2.3): `train` (held-out
precision, recall and AUC) and `run_select` (datatrove stages on the executors of `clean`)."""

from sailor2_jax.data.quality.classifier import QualityModel, TrainSettings, train
from sailor2_jax.data.quality.select import SelectConfig, run_select

__all__ = ["QualityModel", "SelectConfig", "TrainSettings", "run_select", "train"]
