"""The base of this pipeline's datatrove steps: each knows the run's config and its output folder."""

from __future__ import annotations

from datatrove.io import DataFolder
from datatrove.pipeline.base import PipelineStep

from sailor2_jax.data.clean.config import CleanConfig


class CleanStep(PipelineStep):
    def __init__(self, config: CleanConfig, out_dir: DataFolder):
        super().__init__()
        self.config = config
        self.out_dir = out_dir
