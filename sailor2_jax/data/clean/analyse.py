"""Stage 1, one task per input shard: normalise each document and record everything the global steps need.

Global steps (URL dedup, exact dedup, MinHash, frequent lines) must see every shard, so this stage does not drop
anything after reading: it computes per-document facts — URL and text digests, the heuristic and LID verdicts,
MinHash band keys, line hashes — and writes them beside the normalised documents. Stage 2 (decide.py) then applies
the steps in the issue's order on those facts, so a document is attributed to the first step that removes it.
Work is skipped where its answer cannot matter: a document failing the heuristics gets no LID, and a document
failing either gets no MinHash signature (it is removed before MinHash in any case).
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from sailor2_jax.data.clean import hashing
from sailor2_jax.data.stages.accounting import intern
from sailor2_jax.data.clean.config import CleanConfig
from sailor2_jax.data.clean.heuristics import check
from sailor2_jax.data.clean.langid import LanguageIdentifier
from sailor2_jax.data.clean.minhash import MinHasher
from sailor2_jax.data.stages.outputs import JsonlOut, rejected_record
from sailor2_jax.data.clean.step import CleanStep, CountedStep
from sailor2_jax.data.clean.text import normalise, words
from sailor2_jax.languages import LANGUAGES

_TRACKING_PARAMS = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid", "ref_src")
_MINHASH_BATCH = 256  # documents whose band keys are computed together


def normalise_url(url: str) -> str:
    """Same page, same key: lowercase scheme and host, no "www.", default port, fragment, trailing slash or
    tracking parameters; remaining query parameters sorted. A URL that does not parse is its own key."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # "http://[::1", "http://host:port/": bad input must not stop the run
        return url.strip()
    host = (parts.hostname or "").lower().removeprefix("www.")
    if port and (parts.scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                   if not k.lower().startswith(_TRACKING_PARAMS))
    scheme = parts.scheme.lower().replace("https", "http")
    return urlunsplit((scheme, host, parts.path.rstrip("/"), urlencode(query), ""))


class Normalise(CountedStep):
    """sailcraft's per-language document modification; a text left empty is rejected."""

    name = "normalise (sailcraft options per language)"
    type = "✂️ - FORMAT"

    step = "normalise"

    def process(self, doc: Document, lang: str) -> str | None:
        doc.text = normalise(doc.text, self.config.params(lang), lang)
        return None if doc.text else "empty_after_normalisation"


class Annotate(PipelineStep):
    """Per-document facts for stage 2 (see the module docstring), stored in `metadata["facts"]`."""

    name = "facts: digests, heuristics, LID, MinHash, line hashes"
    type = "🔬 - ANALYSE"

    def __init__(self, config: CleanConfig):
        super().__init__()
        self.config = config

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        cfg = self.config
        lid = LanguageIdentifier(cfg.lid_model) if cfg.lid else None
        hasher = MinHasher(cfg.minhash) if cfg.minhash.enabled else None
        pending: list[Document] = []
        for doc in data:
            meta = doc.metadata
            if meta["reject"] is not None:
                pending.append(doc)
                continue
            lang = meta["lang"]
            params = cfg.params(lang)
            url = meta["record"].get("url")
            ws = words(doc.text, params, lang)  # tokenised once, for the heuristics and MinHash
            facts = {
                "url": hashing.digest128(normalise_url(url).encode()) if isinstance(url, str) and url.strip() else None,
                "text": hashing.digest128(doc.text.encode("utf-8")),
                "heuristics": check(doc.text, lang, params, ws) if cfg.heuristics else None,
                "lid": None,
            }
            if facts["heuristics"] is None and lid is not None and params.lid_check:
                if meta.get("lang_detected") and lang not in LANGUAGES:
                    facts["lid"] = "unsupported_language"  # guessed, not asked for: outside the 15 languages
                    meta["lid"] = {"top2": [[label, round(p, 4)] for label, p in lid.predict(doc.text, k=2)]}
                else:
                    verdict = lid.check(doc.text, lang, params.lid_min)
                    facts["lid"] = verdict.reason
                    if verdict.reason is not None:
                        meta["lid"] = verdict.audit()  # for the rejection record, if LID is what removes it
            passes = facts["heuristics"] is None and facts["lid"] is None
            if passes and hasher is not None:
                facts["shingles"] = hasher.shingles(ws)
            if passes and cfg.frequent_lines.enabled:
                facts["lines"] = hashing.line_hashes(doc.text)
            meta["facts"] = facts
            pending.append(doc)
            if len(pending) >= _MINHASH_BATCH:
                yield from self._flush(pending, hasher)
                pending = []
        yield from self._flush(pending, hasher)

    @staticmethod
    def _flush(docs: list[Document], hasher: MinHasher | None) -> list[Document]:
        """Shingles → signatures → band keys for a batch (band keys are one vectorised call per batch)."""
        with_shingles = [d for d in docs if "shingles" in d.metadata.get("facts", {})]
        if hasher is not None and with_shingles:
            keys = hasher.band_keys(hasher.signatures([d.metadata["facts"].pop("shingles") for d in with_shingles]))
            for d, k in zip(with_shingles, keys):
                d.metadata["facts"]["bands"] = k
        return docs


class WorkWriter(CleanStep):
    """Writes stage 1's results: rejected records, the normalised documents and their facts (work/docs, work/facts)."""

    name = "write work files"
    type = "💽 - WRITER"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        cfg = self.config
        rejected = JsonlOut(self.out_dir, f"rejected/analyse-{rank:05d}", cfg.compression)
        docs = JsonlOut(self.out_dir, f"work/docs/{rank:05d}", cfg.compression)
        langs: list[str] = []
        reasons: list[str] = []
        cols: dict[str, list] = {k: [] for k in ("lang", "nbytes", "has_url", "url", "text", "heur", "lid", "bands")}
        line_hashes: list[np.ndarray] = []
        n_bands = cfg.minhash.bands
        for doc in data:
            meta = doc.metadata
            if meta["reject"] is not None:
                rejected.write(rejected_record(doc, cfg.text_key))
                continue
            f = meta["facts"]
            record = {k: v for k, v in meta["record"].items() if k != cfg.text_key}
            docs.write({"i": len(cols["lang"]), "id": doc.id, "text": doc.text, "lang": meta["lang"],
                        "file": meta["file"], "line": meta["line"], "record": record,
                        **({"lid": meta["lid"]} if "lid" in meta else {})})
            cols["lang"].append(intern(langs, meta["lang"]))
            cols["nbytes"].append(len(doc.text.encode("utf-8")))
            cols["has_url"].append(f["url"] is not None)
            cols["url"].append(f["url"] or (0, 0))
            cols["text"].append(f["text"])
            cols["heur"].append(-1 if f["heuristics"] is None else intern(reasons, f["heuristics"]))
            cols["lid"].append(-1 if f["lid"] is None else intern(reasons, f["lid"]))
            cols["bands"].append(f.get("bands", np.zeros(n_bands, dtype=np.uint64)))
            line_hashes.append(f.get("lines", np.empty(0, dtype=np.uint64)))
            yield doc
        rejected.close()
        docs.close()
        n = len(cols["lang"])
        arrays = {
            "lang": np.array(cols["lang"], dtype=np.int32), "nbytes": np.array(cols["nbytes"], dtype=np.int64),
            "has_url": np.array(cols["has_url"], dtype=bool),
            "url": np.array(cols["url"], dtype=np.uint64).reshape(n, 2),
            "text": np.array(cols["text"], dtype=np.uint64).reshape(n, 2),
            "heur": np.array(cols["heur"], dtype=np.int32), "lid": np.array(cols["lid"], dtype=np.int32),
            "bands": np.array(cols["bands"], dtype=np.uint64).reshape(n, n_bands),
            "line_offsets": np.cumsum([0] + [len(h) for h in line_hashes]),
            "line_hashes": np.concatenate(line_hashes) if line_hashes else np.empty(0, dtype=np.uint64),
        }
        with self.out_dir.open(f"work/facts/{rank:05d}.npz", "wb") as fh:
            np.savez(fh, **arrays)
        with self.out_dir.open(f"work/facts/{rank:05d}.json", "w") as fh:
            json.dump({"langs": langs, "reasons": reasons}, fh)

