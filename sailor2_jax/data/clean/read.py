"""The cleaning run's reader: a Document for every input line or row (the lossless readers of data/stages/inputs.py).
Bad input becomes a Document whose `metadata["reject"]` names the step ("read") and the reason, with the raw line
kept; a good one gets its expected language (the record's, the run's, or fastText's guess)."""

from __future__ import annotations


from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder
from tqdm import tqdm

from sailor2_jax.data.clean.config import CleanConfig
from sailor2_jax.data.clean.langid import LanguageIdentifier
from sailor2_jax.data.clean.step import CleanStep
from sailor2_jax.data.stages.accounting import StepCounter
from sailor2_jax.data.stages.inputs import list_input_files, raw_for_rejection, read_rows, shard
from sailor2_jax.languages import canonical_language

UNKNOWN = "unknown"  # language key of lines that could not be parsed


class InputReader(CleanStep):
    """Yields one Document per input line/row, good or bad."""

    name = "read JSONL/Parquet (lossless)"
    type = "📖 - READER"

    def __init__(self, inputs: list[str], config: CleanConfig, out_dir: DataFolder):
        super().__init__(config, out_dir)
        self.files = list_input_files(inputs)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        counter = StepCounter("read")
        lid = None
        files = shard(self.files, rank, world_size)
        bar = tqdm(desc=f"analyse (task {rank}, {len(files)} files)", unit="doc", disable=not self.config.progress)
        for path in files:
            for line_no, raw, record, error in read_rows(path, self.config.text_key):
                bar.update()
                doc = self._document(path, line_no, raw, record, error)
                meta = doc.metadata
                if meta["reject"] is None and meta["lang"] is None:
                    # no language in the record nor on the command line: take fastText's guess, so the
                    # per-language rules can apply; the LID step still enforces its confidence cutoff and
                    # rejects guesses outside the 15 Sailor2 languages
                    lid = lid or LanguageIdentifier(self.config.lid_model)
                    meta["lang"] = lid.predict(doc.text, k=1)[0][0]
                    meta["lang_detected"] = True
                lang = meta["lang"] or UNKNOWN
                counter.entered(lang, len(raw))
                if meta["reject"] is None:
                    counter.left(lang, len(doc.text.encode("utf-8")))
                else:
                    counter.removed(lang, meta["reject"]["reason"])
                yield doc
        bar.close()
        counter.save(self.out_dir, rank)

    def _document(self, path: str, line_no: int, raw: bytes, record: dict | None, error: str | None) -> Document:
        """A Document for one line or row; `error` is the reason it is already known to be bad, if any."""
        meta = {"file": path, "line": line_no, "record": record, "lang": None, "reject": None}
        if record is None:
            meta["raw"] = raw_for_rejection(raw)
            meta["reject"] = {"step": "read", "reason": error}
            return Document(text="", id=f"{path}:{line_no}", metadata=meta)
        text = record.get(self.config.text_key)
        lang = record.get("language")
        meta["lang"] = canonical_language(lang) if isinstance(lang, str) and lang.strip() else self.config.language
        doc_id = str(record["id"]) if record.get("id") is not None else f"{path}:{line_no}"
        reason = error or self._text_problem(record, text)
        if reason is not None:
            meta["reject"] = {"step": "read", "reason": reason}
        return Document(text=text if isinstance(text, str) else "", id=doc_id, metadata=meta)

    def _text_problem(self, record: dict, text) -> str | None:
        if self.config.text_key not in record:
            return "missing_text"
        if not isinstance(text, str):
            return "non_string_text"
        if not text.strip():
            return "empty_text"
        limit = self.config.max_document_bytes
        if len(text) > limit:  # cheap first: a character is at least one byte
            return "huge_document"
        try:
            return "huge_document" if len(text.encode("utf-8")) > limit else None
        except UnicodeEncodeError:  # JSON escapes can spell lone surrogates, which no UTF-8 text holds
            return "invalid_unicode"
