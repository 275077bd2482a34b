"""Run inside `.venv-opencompass` (never imported by the project): OpenCompass' own code (the opencompass 0.2.2
release, whose prompt template, retrievers, inferencers, template parser and HuggingFaceCausalLM are those of
001e77f, the commit SailCompass pins) renders prompts and scores PPL choices for the entries given, and, when a
SailCompass checkout is named, SailCompass' own evaluators score the predictions given.

    .venv-opencompass/bin/python tests/eval/opencompass_reference.py < request.json

request: {"output": ANSWER_FILE, "model": HF_DIR, "max_seq_len": N, "datasets": [{"config": FILE, "entries": [...]}],
          "sailcompass": CHECKOUT or null, "evaluations": [{"evaluator": NAME, "predictions": [...],
          "references": [...]}]}
answer:  {"datasets": [{"prompts": [...] (gen) | {"labels", "prompts": [[label prompts]], "ppl": [[...]],
          "predictions": [...]} (ppl)}], "evaluations": [{...the evaluator's result}]}

Only the modules compared are imported: OpenCompass' package `__init__`s (which import every evaluator, dataset
and model OpenCompass has, with their dependencies) are replaced by empty packages whose submodules load from the
installed files. A config's `opencompass.datasets` names (SailCompass' loaders) are placeholders: the entries come
already loaded.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import types
from pathlib import Path

import opencompass

ROOT = Path(opencompass.__file__).parent


def _package(name: str, path: Path | None) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(path)] if path else []
    sys.modules[name] = module
    return module


class _Placeholder(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return attr


def setup() -> None:
    # utils/types.py imports HF `datasets` only to type-check Dataset objects, which are never passed here
    datasets = types.ModuleType("datasets")
    datasets.Dataset = type("Dataset", (), {})
    datasets.DatasetDict = type("DatasetDict", (), {})
    sys.modules.setdefault("datasets", datasets)
    for name, rel in (("opencompass.openicl", "openicl"), ("opencompass.openicl.icl_inferencer",
                                                           "openicl/icl_inferencer"),
                      ("opencompass.openicl.icl_retriever", "openicl/icl_retriever"),
                      ("opencompass.openicl.icl_evaluator", "openicl/icl_evaluator"),
                      ("opencompass.openicl.utils", "openicl/utils"), ("opencompass.models", "models"),
                      ("opencompass.utils", "utils")):
        _package(name, ROOT / rel)
    utils = sys.modules["opencompass.utils"]
    for sub in ("logging", "prompt", "types", "text_postprocessors", "auxiliary"):
        module = importlib.import_module(f"opencompass.utils.{sub}")
        for k, v in vars(module).items():
            if not k.startswith("_"):
                setattr(utils, k, v)
    oi = sys.modules["opencompass.openicl.utils"]
    oi.get_logger = importlib.import_module("opencompass.openicl.utils.logging").get_logger
    retr = sys.modules["opencompass.openicl.icl_retriever"]
    retr.BaseRetriever = importlib.import_module("opencompass.openicl.icl_retriever.icl_base_retriever").BaseRetriever
    retr.ZeroRetriever = importlib.import_module("opencompass.openicl.icl_retriever.icl_zero_retriever").ZeroRetriever
    ev = sys.modules["opencompass.openicl.icl_evaluator"]
    ev.BaseEvaluator = importlib.import_module("opencompass.openicl.icl_evaluator.icl_base_evaluator").BaseEvaluator
    # SailCompass' configs import its evaluators from here: placeholders (the evaluators are compared separately)
    ev.__getattr__ = lambda attr: _Placeholder.__getattr__(ev, attr)
    sys.modules["opencompass.datasets"] = _Placeholder("opencompass.datasets")


def read_config(file: str) -> dict:
    """A dataset config, run with the placeholders: our fixture's, or with SAILCOMPASS_SRC the user's SailCompass
    checkout's (run here, in the reference venv, as OpenCompass itself runs them; the project only parses them)."""
    from opencompass.openicl.icl_inferencer.icl_gen_inferencer import GenInferencer
    from opencompass.openicl.icl_inferencer.icl_ppl_inferencer import PPLInferencer
    from opencompass.openicl.icl_prompt_template import PromptTemplate
    inf = sys.modules["opencompass.openicl.icl_inferencer"]
    inf.GenInferencer, inf.PPLInferencer = GenInferencer, PPLInferencer
    sys.modules["opencompass.openicl.icl_prompt_template"].PromptTemplate = PromptTemplate
    env: dict = {}
    exec(compile(Path(file).read_text(encoding="utf-8"), file, "exec"), env)
    return next(v for k, v in env.items() if k.endswith("_datasets"))[0]


def run_dataset(cfg: dict, entries: list[dict], model, tmp: Path) -> dict:
    from opencompass.openicl.icl_prompt_template import PromptTemplate
    from opencompass.openicl.icl_retriever.icl_zero_retriever import ZeroRetriever

    template = PromptTemplate(**{k: v for k, v in cfg["infer_cfg"]["prompt_template"].items() if k != "type"})
    column = cfg["reader_cfg"]["output_column"]
    reader = types.SimpleNamespace(output_column=column, input_columns=cfg["reader_cfg"]["input_columns"],
                                   dataset={"test": {column: [e[column] for e in entries]}})
    retriever = ZeroRetriever(types.SimpleNamespace(reader=reader, train=entries, test=entries))
    inferencer = cfg["infer_cfg"]["inferencer"]["type"]
    if inferencer.__name__ == "GenInferencer":
        gen = inferencer(model=model, max_out_len=cfg["infer_cfg"]["inferencer"]["max_out_len"],
                         max_seq_len=model.max_seq_len, batch_size=1)
        prompts = gen.get_generation_prompt_list_from_retriever_indices(
            retriever.retrieve(), retriever, gen.gen_field_replace_token, max_seq_len=model.max_seq_len,
            prompt_template=template)
        return {"prompts": [model.parse_template(p, mode="gen") for p in prompts]}
    ppl = inferencer(model=model, max_seq_len=model.max_seq_len, batch_size=1, output_json_filepath=str(tmp),
                     output_json_filename="ppl.json")
    predictions = ppl.inference(retriever, prompt_template=template)
    results = json.loads((tmp / "ppl.json").read_text())
    labels = retriever.get_labels(prompt_template=template)
    rows = [results[str(i)] for i in range(len(entries))]
    return {"labels": [str(x) for x in labels], "predictions": [str(p) for p in predictions],
            "prompts": [[r[f"label: {x}"]["prompt"] for x in labels] for r in rows],
            "ppl": [[r[f"label: {x}"]["PPL"] for x in labels] for r in rows]}


def sailcompass_evaluators(checkout: Path) -> dict:
    """SailCompass' own evaluators, loaded from its checkout as its setup script installs them into OpenCompass."""
    def load(name: str, file: Path):
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    post = load("opencompass.utils.sailor_text_postprocessors", checkout / "sailor_text_postprocessors.py")
    utils = sys.modules["opencompass.utils"]
    for k in ("general_pred_postprocess", "general_ans_postprocess", "first_option_parse"):
        setattr(utils, k, getattr(post, k))
    # evaluate's hub metrics cannot be fetched here; TextGenEvaluator's two are these sacrebleu calls (the
    # `sacrebleu` and `chrf` metric scripts: corpus_bleu with its defaults; CHRF(word_order=...).corpus_score)
    evaluate = types.ModuleType("evaluate")

    class _Metric:
        def __init__(self, name):
            self.name = name

        def compute(self, predictions, references, word_order=0):
            import sacrebleu
            refs = [[r for r in references]]
            if self.name.endswith("chrf") or self.name.endswith("chrf.py"):
                return {"score": sacrebleu.CHRF(word_order=word_order).corpus_score(predictions, refs).score}
            return {"score": sacrebleu.corpus_bleu(predictions, refs).score}
    evaluate.load = _Metric
    sys.modules["evaluate"] = evaluate
    base = types.ModuleType("opencompass.datasets.base")
    base.BaseDataset = object
    sys.modules["opencompass.datasets.base"] = base
    sys.modules["opencompass.datasets"] = _package("opencompass.datasets", checkout / "datasets")
    ev = load("opencompass.openicl.icl_evaluator.icl_sailor_evaluator", checkout / "icl_sailor_evaluator.py")
    m3 = load("opencompass.datasets.m3exam", checkout / "datasets" / "m3exam.py")
    bb = load("opencompass.datasets.belebele", checkout / "datasets" / "belebele.py")
    ty = load("opencompass.datasets.tydiqa_id", checkout / "datasets" / "tydiqa_id.py")
    return {"AnsEvaluator": ev.AnsEvaluator, "TextGenEvaluator": ev.TextGenEvaluator,
            "M3examEmEvaluator": m3.M3examEmEvaluator, "M3examThEvaluator": m3.M3examThEvaluator,
            "BelebeleEvaluator": bb.BelebeleEvaluator, "TydiqaIdEvaluator": ty.TydiqaIdEvaluator}


def main() -> None:
    request = json.load(sys.stdin)
    setup()
    answer: dict = {"datasets": [], "evaluations": []}
    if request.get("datasets"):
        from opencompass.models.huggingface import HuggingFaceCausalLM
        model = HuggingFaceCausalLM(path=request["model"], max_seq_len=request["max_seq_len"],
                                    model_kwargs={"torch_dtype": "torch.float"}, batch_padding=False)
        with tempfile.TemporaryDirectory() as tmp:
            for k, d in enumerate(request["datasets"]):
                (Path(tmp) / str(k)).mkdir()
                answer["datasets"].append(run_dataset(read_config(d["config"]), d["entries"], model,
                                                      Path(tmp) / str(k)))
    if request.get("sailcompass"):
        evaluators = sailcompass_evaluators(Path(request["sailcompass"]))
        for e in request["evaluations"]:
            result = evaluators[e["evaluator"]]().score(e["predictions"], e["references"])
            result.pop("details", None)
            answer["evaluations"].append(result)
    Path(request["output"]).write_text(json.dumps(answer, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
