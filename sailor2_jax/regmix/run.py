"""A RegMix search in an output directory: sample → train → fit → search, each phase skipped where the directory
already holds its result, so a rerun resumes and a larger `sample.num_mixtures` grows the search.

    DIR/regmix.json          the config (a rerun with other proxies, data or sampling is refused)
    DIR/mixtures.json        languages, prior (training-token shares), sampling statistics, the mixtures (id = index)
    DIR/proxies/program/     the running program's checkpoints (removed when its results are in)
    DIR/proxies/metrics.jsonl  training loss of the running proxies (mean, min, max) and proxy tokens/s
    DIR/results.jsonl        one row per trained proxy: id, weights, per-language validation loss, training loss
    DIR/fit.json             Spearman per target (held-out mixtures), best iterations, which mixtures were held out
    DIR/regressor.txt        the objective's LightGBM model (LightGBM's text format)
    DIR/search.json          the answer, predicted objectives, the epoch cap (how many of the best it set aside),
                             how far the answer lies outside the proxies' weights, tokens and epochs over the budget
    DIR/rates.json           the answer as `mixture.rates_file` reads it: language -> weight (sum 1)
    DIR/tokens.json          the answer in tokens over `search.budget_tokens`
    DIR/regmix.png           predicted vs measured objective; the answer against the prior

Files are written atomically (temp + rename), by process 0 of a multi-host job; every process computes the same.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from rich.console import Console

from sailor2_jax import files
from sailor2_jax.regmix.config import RegMixConfig
from sailor2_jax.regmix.data import ProxyData
from sailor2_jax.regmix.sample import normalised, sample_mixtures

console = Console()


# one writer per run directory: process 0
def write_json(path: Path, obj: Any) -> None:
    if jax.process_index() == 0:
        files.write_json(path, obj)


def write_jsonl(path: Path, records) -> None:
    if jax.process_index() == 0:
        files.write_jsonl(path, records)


def _fingerprint(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=8).hexdigest()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    return {k: v for key, value in d.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else key).items()}


def check_manifest(cfg: RegMixConfig, out: Path) -> None:
    """Refuse a directory whose mixtures or proxies came from another setup (data, sampling, proxies, validation)."""
    saved = _read_json(out / "regmix.json")
    if saved is not None:
        new, old = _flat(cfg.frozen_part()), _flat(RegMixConfig.model_validate(saved).frozen_part())
        diffs = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))
        if diffs:
            raise ValueError(f"{out} holds a search with another {', '.join(diffs)}: its proxies cannot be mixed "
                             "with these; use another --out (only sample.num_mixtures, fit and search may change)")
    write_json(out / "regmix.json", cfg.model_dump(mode="json"))


def read_results(path: Path, languages: list[str]) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return rows
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        if list(row["weights"]) != languages:
            raise ValueError(f"{path}:{n}: weights over {list(row['weights'])}, this search is over {languages}")
        rows[int(row["id"])] = row
    return rows


class Search:
    """One search's directory and phases (see the module docstring)."""

    def __init__(self, cfg: RegMixConfig, out: Path, *, data: ProxyData | None = None, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self._data = data
        self.out.mkdir(parents=True, exist_ok=True)
        check_manifest(cfg, self.out)

    @property
    def data(self) -> ProxyData:
        if self._data is None:
            console.print(f"loading the data of {self.cfg.data} (held-out text, proxy vocabulary)")
            self._data = ProxyData.load(self.cfg)
        return self._data

    # --- sample ------------------------------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        path, cfg = self.out / "mixtures.json", self.cfg.sample
        table = _read_json(path)
        if table is not None and len(table["mixtures"]) >= cfg.num_mixtures:
            console.print(f"sample: {path} holds {len(table['mixtures'])} mixtures (skipped)")
            return table
        if table is None:
            tokens = self.data.train_tokens
            table = {"languages": list(self.data.languages), "train_tokens": tokens, "prior": normalised(tokens),
                     "batches": [], "mixtures": []}
        prior = np.asarray([table["prior"][lang] for lang in table["languages"]])
        held = np.asarray(table["mixtures"], np.float64).reshape(-1, len(prior))
        seed = cfg.seed + len(table["batches"])  # the first batch is the reference's draw; later ones grow it
        new, stats = sample_mixtures(prior, cfg, cfg.num_mixtures - len(held), seed, exclude=held)
        table["batches"].append({"seed": seed, "first_id": len(held), **stats.__dict__})
        table["mixtures"] += new.tolist()
        write_json(path, table)
        console.print(f"sample: {stats.selected} mixtures over {', '.join(table['languages'])} from "
                      f"{stats.candidates} candidates ({stats.accepted} within {cfg.maximum_usage:g} epochs, "
                      f"{stats.unique} distinct) → {path}")
        return table

    # --- train -------------------------------------------------------------------------------------------------

    def train(self, table: dict[str, Any]) -> dict[int, dict[str, Any]]:
        from sailor2_jax.regmix.program import ProxyProgram, program_size, proxy_mesh, proxy_train_config, \
            train_program

        languages = table["languages"]
        results_path = self.out / "results.jsonl"
        results = read_results(results_path, languages)
        wanted = range(min(self.cfg.sample.num_mixtures, len(table["mixtures"])))
        pending = [i for i in wanted if i not in results]
        if not pending:
            console.print(f"train: {results_path} holds results for all {len(wanted)} mixtures (skipped)")
            return results
        data, proxy = self.data, self.cfg.proxy
        if list(data.languages) != languages:
            raise ValueError(f"{self.out / 'mixtures.json'} is over {languages}, the data over {data.languages}")
        mesh = proxy_mesh()
        devices = mesh.shape["data"]
        if proxy.per_program % devices:
            raise ValueError(f"proxy.per_program ({proxy.per_program}) must be a multiple of the {devices} devices")
        model_cfg = proxy.model.replace(vocab_size=data.vocab.size)
        train_cfg = proxy_train_config(proxy, model_cfg)
        running = self.out / "proxies" / "program"
        programs, groups = {}, []
        saved = _read_json(running / "program.json")
        if saved is not None and set(saved["mixtures"]) <= set(pending):
            groups.append(saved["mixtures"])  # the program a killed run left: it resumes from its checkpoint
            pending = [i for i in pending if i not in saved["mixtures"]]
        elif running.exists() and jax.process_index() == 0:
            shutil.rmtree(running)  # its results are in (killed before the clean-up)
        groups += [pending[i:i + proxy.per_program] for i in range(0, len(pending), proxy.per_program)]
        weights = np.asarray(table["mixtures"], np.float64)
        programs_text = f"{len(groups)} program" + "s" * (len(groups) > 1)
        console.print(f"train: {sum(map(len, groups))} proxies ({model_cfg.num_layers} layers, d "
                      f"{model_cfg.hidden_size}, {data.vocab.size} vocabulary rows) in {programs_text} on {devices} "
                      f"devices, {proxy.steps} steps of {proxy.batch_size} x {proxy.seq_len} tokens each")
        for ids in groups:
            size = program_size(len(ids), devices)
            if saved is not None and ids == saved["mixtures"] and saved["size"] != size:
                raise ValueError(f"{running} holds a program of {saved['size']} proxies; on {devices} devices it "
                                 f"would have {size}: resume on the device count it started on")
            if size not in programs:
                programs[size] = ProxyProgram(train_cfg, model_cfg, mesh, size)
            running.mkdir(parents=True, exist_ok=True)
            write_json(running / "program.json", {"mixtures": ids, "size": size})
            losses, train_loss = train_program(programs[size], data, ids, weights[ids], running / "checkpoints",
                                               proxy, progress=self.progress,
                                               metrics_file=self.out / "proxies" / "metrics.jsonl")
            tokens = proxy.steps * proxy.batch_size * proxy.seq_len
            for k, i in enumerate(ids):
                results[i] = {"id": i, "weights": dict(zip(languages, weights[i].tolist())),
                              "losses": dict(zip(languages, losses[k].tolist())),
                              "train_loss": float(train_loss[k]), "steps": proxy.steps, "tokens": tokens}
            write_jsonl(results_path, (results[i] for i in sorted(results)))
            multihost_utils.sync_global_devices("regmix program done")
            if jax.process_index() == 0:
                shutil.rmtree(running)
            console.print(f"train: mixtures {ids[0]}..{ids[-1]} done, mean validation loss "
                          f"{float(losses.mean()):.4f} → {results_path}")
        return results

    # --- fit and search ------------------------------------------------------------------------------------------

    def fit_and_search(self, table: dict[str, Any], results: dict[int, dict[str, Any]]) -> dict[str, Any]:
        import lightgbm as lgb

        from sailor2_jax.regmix.fit import OBJECTIVE, fit, target_function
        from sailor2_jax.regmix.search import epoch_caps, outside_range, plot, search

        languages = table["languages"]
        ids = sorted(results)
        weights = np.asarray([[results[i]["weights"][lang] for lang in languages] for i in ids])
        losses = np.asarray([[results[i]["losses"][lang] for lang in languages] for i in ids])
        fit_key = _fingerprint({"fit": self.cfg.fit.model_dump(mode="json"), "ids": ids})
        fit_path, model_path = self.out / "fit.json", self.out / "regressor.txt"
        report = _read_json(fit_path)
        if report is not None and report.get("fingerprint") == fit_key and model_path.is_file():
            console.print(f"fit: {fit_path} is up to date (skipped)")
            model = lgb.Booster(model_file=str(model_path))
            held = set(report["heldout_ids"])
            heldout = np.asarray([i in held for i in ids])
        else:
            result = fit(ids, weights, losses, languages, self.cfg.fit)
            heldout, model = result.heldout, result.models[OBJECTIVE]
            report = {"fingerprint": fit_key, "target": self.cfg.fit.target, "mixtures": len(ids),
                      "heldout_ids": [i for i, h in zip(ids, heldout) if h], "targets": result.report}
            if jax.process_index() == 0:
                model.save_model(str(model_path.with_name(model_path.name + ".tmp")))
                model_path.with_name(model_path.name + ".tmp").replace(model_path)
            write_json(fit_path, report)
            rho = {k: v["spearman"] for k, v in result.report.items()}
            console.print(f"fit: {len(ids)} mixtures ({int(heldout.sum())} held out); Spearman of the objective "
                          f"({self.cfg.fit.target}) {_fmt(rho[OBJECTIVE])}, per language "
                          + ", ".join(f"{k.removeprefix('loss/')} {_fmt(v)}" for k, v in rho.items()
                                      if k != OBJECTIVE) + f" → {fit_path}")
        search_key = _fingerprint({"search": self.cfg.search.model_dump(mode="json"), "fit": fit_key})
        search_path, rates_path = self.out / "search.json", self.out / "rates.json"
        summary = _read_json(search_path)
        if summary is not None and summary.get("fingerprint") == search_key and rates_path.is_file():
            console.print(f"search: {rates_path} is up to date (skipped)")
            return summary
        prior = np.asarray([table["prior"][lang] for lang in languages])
        cfg = self.cfg.search
        available = cfg.available_tokens or table["train_tokens"]
        capped = cfg.budget_tokens is not None and cfg.max_epochs is not None
        cap = epoch_caps(languages, available, cfg.budget_tokens, cfg.max_epochs) if capped else None
        found = search(model.predict, prior, cfg, cap)
        rates = dict(zip(languages, found.weights.tolist()))
        outside = outside_range(found.top_k, weights)
        answer_outside = outside_range(found.weights[None], weights)[0]
        summary = {"fingerprint": search_key, "target": self.cfg.fit.target, "rates": rates,
                   "prior": dict(zip(languages, prior.tolist())),
                   "predicted": {"answer": float(model.predict(found.weights[None])[0]),
                                 "prior": float(model.predict(prior[None])[0]),
                                 "top_k": [float(found.predicted_top_k.min()), float(found.predicted_top_k.max())],
                                 "simulated": [float(found.predicted_all.min()), float(found.predicted_all.max())]},
                   "num_samples": cfg.num_samples, "top_k": cfg.top_k,
                   "cap": None if cap is None else {
                       "max_epochs": cfg.max_epochs, "budget_tokens": cfg.budget_tokens,
                       "available_tokens": {lang: float(available[lang]) for lang in languages},
                       "available_from": "search.available_tokens" if cfg.available_tokens else
                       "mixtures.json train_tokens",
                       "max_weight": dict(zip(languages, cap.tolist())),
                       "within_cap": found.within_cap, "removed_from_top_k": found.cap_removed_from_top_k,
                       "top_k_used": len(found.top_k)},
                   "proxy_range": {"min": dict(zip(languages, weights.min(0).tolist())),
                                   "max": dict(zip(languages, weights.max(0).tolist())),
                                   "answer_outside": dict(zip(languages, answer_outside.tolist())),
                                   "answer_outside_max": float(answer_outside.max()),
                                   "top_k_outside_share": float(np.mean(outside.max(axis=1) > 0))}}
        write_json(rates_path, rates)
        if cfg.budget_tokens is not None:
            tokens = {lang: w * cfg.budget_tokens for lang, w in rates.items()}
            write_json(self.out / "tokens.json", tokens)
            summary["tokens"] = tokens
            summary["epochs"] = {lang: tokens[lang] / float(available[lang]) for lang in languages}
        write_json(search_path, summary)
        measured = np.asarray(target_function(self.cfg.fit.target)(losses), np.float64)
        if jax.process_index() == 0:
            plot(self.out / "regmix.png", languages, prior, found.weights, measured, model.predict(weights), heldout,
                 report["targets"][OBJECTIVE], self.cfg.fit.target)
        console.print("search: " + ", ".join(f"{lang} {w:.3f}" for lang, w in rates.items())
                      + " (prior: " + ", ".join(f"{lang} {w:.3f}" for lang, w in zip(languages, prior)) + ")"
                      + f" → {rates_path}, {self.out / 'regmix.png'}")
        if cap is None:
            console.print("search: no epoch cap (it needs search.budget_tokens and search.max_epochs)")
        else:
            console.print(f"search: at most {cfg.max_epochs:g} epochs of each language over {cfg.budget_tokens:g} "
                          f"tokens: {found.within_cap} of {cfg.num_samples} simulated mixtures within, "
                          f"{found.cap_removed_from_top_k} of the best {cfg.top_k} set aside")
        r = summary["proxy_range"]
        console.print(f"search: {100 * r['top_k_outside_share']:.0f} % of the best {len(found.top_k)} lie outside the "
                      f"weights the proxies trained on; the answer by at most {r['answer_outside_max']:.4f}")
        return summary


def _fmt(rho: float | None) -> str:
    return "n/a" if rho is None else f"{rho:.3f}"


def run_regmix(cfg: RegMixConfig, out: str | Path, *, data: ProxyData | None = None, progress: bool = True
               ) -> dict[str, Any]:
    """The whole search (see the module docstring); the search summary (search.json's content)."""
    t0 = time.perf_counter()
    s = Search(cfg, Path(out), data=data, progress=progress)
    table = s.sample()
    results = s.train(table)
    summary = s.fit_and_search(table, results)
    console.print(f"regmix: {len(results)} proxies, {time.perf_counter() - t0:.0f} s")
    return summary
