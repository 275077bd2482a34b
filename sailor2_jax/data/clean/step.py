"""The bases of this pipeline's datatrove steps."""

from __future__ import annotations

import abc

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder
from datatrove.pipeline.base import PipelineStep

from sailor2_jax.data.stages.accounting import StepCounter
from sailor2_jax.data.clean.config import CleanConfig


class CleanStep(PipelineStep):
    """A step of a cleaning run: it knows the run's config and its output folder."""

    def __init__(self, config: CleanConfig, out_dir: DataFolder):
        super().__init__()
        self.config = config
        self.out_dir = out_dir


class CountedStep(CleanStep, abc.ABC):
    """A step that sees every live document once and may edit or remove it; documents and bytes in and out, and
    removals by reason, are counted per language for the run's accounting (already-rejected ones pass through)."""

    step: str  # its name in accounting.STEPS

    def setup(self) -> None:
        """Load what `process` needs, once per task (`self.rank` is the task's shard)."""

    @abc.abstractmethod
    def process(self, doc: Document, lang: str) -> str | tuple[str, dict] | None:
        """Edit `doc` in place; return the reason to remove it (with details for its rejection record, if any), or
        None to keep it."""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.rank = rank
        self.setup()
        counter = StepCounter(self.step)
        for doc in data:
            meta = doc.metadata
            if meta["reject"] is None:
                lang = meta["lang"]
                counter.entered(lang, len(doc.text.encode("utf-8")))
                verdict = self.process(doc, lang)
                if verdict is None:
                    counter.left(lang, len(doc.text.encode("utf-8")))
                else:
                    reason, details = (verdict, {}) if isinstance(verdict, str) else verdict
                    counter.reject(meta, reason)
                    meta["reject"].update(details)
            yield doc
        counter.save(self.out_dir, rank)
