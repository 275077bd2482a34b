"""The vmapped proxy program: each proxy trains as it would alone, and a killed program resumes exactly."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from regmix_helpers import LANGS, config, documents, stage

from sailor2_jax.config import MeshConfig
from sailor2_jax.languages import LANGUAGE_INDEX
from sailor2_jax.data.loader import TaskDocuments
from sailor2_jax.model.init import create_model
from sailor2_jax.regmix.data import ProxyData
from sailor2_jax.regmix.program import ProxyProgram, proxy_train_config, train_program
from sailor2_jax.sharding import global_batch, make_mesh
from sailor2_jax.train.objectives import Objective
from sailor2_jax.train.step import init_state, setup_step

LENGTHS = {"en": [40, 25, 60, 33], "vi": [90], "th": [30, 30, 30, 30, 30]}
WEIGHTS = np.asarray([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.0, 0.5, 0.5]])


def _setup(cfg, docs=None):
    data = ProxyData(stage(), docs or documents(LENGTHS), cfg.proxy, cfg.validation)
    model_cfg = cfg.proxy.model.replace(vocab_size=data.vocab.size)
    return data, model_cfg, proxy_train_config(cfg.proxy, model_cfg)


@pytest.fixture(scope="module")
def four():
    """Four proxies as one program, one per device (compiled once for the module)."""
    cfg = config()
    data, model_cfg, train_cfg = _setup(cfg)
    mesh = make_mesh(MeshConfig(data=4, fsdp=1, tensor=1), jax.devices()[:4])
    return cfg, data, ProxyProgram(train_cfg, model_cfg, mesh, 4)


def _alone(data, model_cfg, train_cfg, mixtures):
    """Each proxy through the project's ordinary jitted step (setup_step.compile) on one device: per-language
    validation losses and last training loss."""
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    setup = setup_step(train_cfg, model_cfg, mesh)
    objective = Objective(train_cfg.objective)
    step = setup.compile(objective, mesh, train_cfg.data.micro_batches, with_reference=False)
    params = nnx.to_pure_dict(nnx.state(create_model(model_cfg, mesh, train_cfg.init.seed, train_cfg.compute)))
    first = jax.jit(lambda p: init_state(p, setup.tx, train_cfg.init.seed), out_shardings=setup.shardings)
    idx = [LANGUAGE_INDEX[lang] for lang in LANGS]
    out = []
    for weights in mixtures:
        state, it = first(params), data.iterator(weights, "alone")
        with jax.set_mesh(mesh):
            for _ in range(train_cfg.steps):
                state, metrics = step(state, global_batch(data.vocab.remap(next(it)), mesh), None)
        model = nnx.merge(setup.graphdef, state.params)
        nll = tokens = 0.0
        for batch in data.validation:
            _, sums = objective.loss(model, {k: jax.numpy.asarray(v) for k, v in batch.items()}, None)
            nll, tokens = nll + np.asarray(sums["lang_nll"]), tokens + np.asarray(sums["lang_tokens"])
        out.append((nll[idx] / tokens[idx], float(metrics["loss"])))
    return out


def test_vmapped_proxies_equal_proxies_trained_alone(four, tmp_path):
    cfg, data, program = four
    losses, train_loss = train_program(program, data, [0, 1, 2, 3], WEIGHTS, tmp_path / "ckpt", cfg.proxy,
                                       progress=False, metrics_file=tmp_path / "metrics.jsonl")
    assert losses.shape == (4, 3) and np.all(np.isfinite(losses))
    # the mixture shows: each language's held-out loss is lowest for the proxy that read most of it
    assert [int(np.argmin(losses[:, k])) for k in range(3)] == [0, 1, 3]
    alone = _alone(data, program.model_cfg, program.train_cfg, WEIGHTS[[1, 3]])
    for k, (alone_losses, alone_train) in zip((1, 3), alone):  # fp32 compute; two compiled programs: a tolerance
        np.testing.assert_allclose(losses[k], alone_losses, rtol=2e-5)
        np.testing.assert_allclose(train_loss[k], alone_train, rtol=2e-5)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3  # steps 2, 4, 6


class _Failing:
    """Documents that raise once reading has reached `after` documents while armed: a crash mid-program."""

    def __init__(self, docs, after):
        self.reads, self.after, self.armed = 0, after, False
        self.docs = {n: TaskDocuments(n, d.data.map(self._read), d.mean_tokens, {}) for n, d in docs.items()}

    def _read(self, doc):
        self.reads += self.armed
        if self.armed and self.reads > self.after:
            raise RuntimeError("simulated crash")
        return doc


def test_a_killed_program_resumes_exactly(four, tmp_path):
    cfg, data, program = four
    ids = [0, 1, 2, 3]
    full = train_program(program, data, ids, WEIGHTS, tmp_path / "full", cfg.proxy, progress=False)

    failing = _Failing(documents(LENGTHS), after=10)  # documents for two steps of the four proxies, then a crash
    crashed, _, _ = _setup(cfg, failing.docs)
    failing.armed = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_program(program, crashed, ids, WEIGHTS, tmp_path / "resumed", cfg.proxy, progress=False)
    saved = sorted(int(p.name) for p in (tmp_path / "resumed").iterdir() if p.name.isdigit())
    assert saved and saved[-1] in (2, 4)  # the crash came after a checkpoint and before the end
    failing.armed = False
    resumed = train_program(program, crashed, ids, WEIGHTS, tmp_path / "resumed", cfg.proxy, progress=False)
    assert np.array_equal(resumed[0], full[0]) and np.array_equal(resumed[1], full[1])  # same program: bitwise


def test_program_size_must_fit_the_devices():
    cfg = config()
    data, model_cfg, train_cfg = _setup(cfg)
    with pytest.raises(ValueError, match="multiple of the device count"):
        ProxyProgram(train_cfg, model_cfg, make_mesh(MeshConfig(data=4, fsdp=1, tensor=1), jax.devices()[:4]), 6)


def test_the_program_needs_no_data_stack():
    """An accelerator image without grain/seqio/TensorFlow can build proxies (bench/regmix.py --synthetic)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('grain', 'seqio', 'tensorflow'): sys.modules[m] = None  # importing them fails\n"
            "import sailor2_jax.regmix.config, sailor2_jax.regmix.program, sailor2_jax.train.batches\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
