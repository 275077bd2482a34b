"""The step family: accumulation equals one big batch (fp32; bf16 to its rounding), the NaN guard skips and counts, the trainable mask freezes
exactly the old layers (weight decay included) with Adam moments for the new layers' rows only, and the schedules
hit their closed-form values."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sailor2_jax.config import load
from sailor2_jax.model.init import abstract_model, create_model
from sailor2_jax.sharding import global_batch, make_mesh
from sailor2_jax.train.config import ScheduleConfig, TrainConfig
from sailor2_jax.train.batches import SyntheticLM
from sailor2_jax.train.objectives import Objective
from sailor2_jax.train.optim import decay_mask, schedule
from sailor2_jax.train.step import init_state, setup_step, train_state_shardings

BASE = ["data.source=synthetic", "model.base=tiny", "model.vocab_size=256", "model.num_layers=2", "compute.dtype=float32",
        "data.batch_size=8", "data.seq_len=32", "optimizer.schedule.kind=constant",
        "optimizer.schedule.peak_lr=1e-2", "steps=10"]


def _setup(overrides, make_tx=None):
    cfg = load(TrainConfig, None, BASE + overrides)
    mesh = make_mesh(cfg.mesh)
    model = create_model(cfg.model, mesh, seed=0, compute=cfg.compute)
    setup = setup_step(cfg, cfg.model, mesh)
    if make_tx is not None:  # a reference optimiser in place of ours
        tx = make_tx(cfg, setup.mask, setup.lr_schedule)
        abstract = nnx.state(abstract_model(cfg.model, cfg.compute))
        setup = dataclasses.replace(setup, tx=tx, shardings=train_state_shardings(abstract, tx, mesh))
    step = setup.compile(Objective(cfg.objective), mesh, cfg.data.micro_batches, with_reference=False)
    state = jax.jit(lambda p: init_state(p, setup.tx, 0), out_shardings=setup.shardings)(
        nnx.to_pure_dict(nnx.state(model)))
    batch = next(SyntheticLM(cfg.data.batch_size, 32, 256, seed=5, process_index=0, process_count=1))
    return cfg, mesh, step, state, batch


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_grad_accumulation_equals_one_big_batch(dtype, rtol):
    """Two micro-batches give the big batch's loss and gradient: to fp32 rounding in fp32 compute; in bf16 compute
    only to bf16 rounding (the micro-batches' activations and gradients are rounded apart), which the README says."""
    results = []
    for m in (1, 2):
        _, mesh, step, state, batch = _setup([f"data.micro_batches={m}", "data.batch_size=16",
                                              f"compute.dtype={dtype}"],
                                             make_tx=lambda *_: optax.sgd(1.0))  # params move by -gradient
        before = _host(state.params)
        with jax.set_mesh(mesh):
            state, metrics = step(state, global_batch(batch, mesh), None)
        grads = jax.tree.map(lambda b, a: b - a, before, _host(state.params))
        results.append((grads, _host(metrics)))
    (g1, m1), (g2, m2) = results
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=rtol / 10)
    np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=rtol)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g1))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale), g2, g1)


def test_nan_guard_skips_the_update_and_counts():
    _, mesh, step, state, batch = _setup([])
    before = _host(state.params)
    bad = dict(batch, loss_mask=batch["loss_mask"].astype(np.float32) * np.float32("nan"))
    with jax.set_mesh(mesh):
        state, m1 = step(state, global_batch(bad, mesh), None)
        state, m2 = step(state, global_batch(bad, mesh), None)
        after_bad = _host(state.params)
        state, m3 = step(state, global_batch(batch, mesh), None)
    assert not bool(m1["finite"]) and int(m2["bad_steps"]) == 2 and int(m2["skipped_steps"]) == 2
    jax.tree.map(np.testing.assert_array_equal, after_bad, before)
    assert bool(m3["finite"]) and int(m3["bad_steps"]) == 0 and int(m3["skipped_steps"]) == 2
    assert int(state.step) == 3


def test_new_layers_mask_trains_only_the_new_layers():
    _, mesh, step, state, batch = _setup(["optimizer.trainable=new_layers", "optimizer.new_layers=[false,true]",
                                            "optimizer.weight_decay=0.5"])
    before = _host(state.params)
    with jax.set_mesh(mesh):
        for _ in range(2):
            state, _ = step(state, global_batch(batch, mesh), None)
    after = _host(state.params)
    for name, w in after["layers"].items():
        np.testing.assert_array_equal(w[0], before["layers"][name][0])  # old layer: untouched, no decay either
        if name not in ("attn_norm", "mlp_norm"):
            assert not np.array_equal(w[1], before["layers"][name][1]), name
    np.testing.assert_array_equal(after["embed"], before["embed"])
    np.testing.assert_array_equal(after["final_norm"], before["final_norm"])


NEW_LAYERS = ["model.num_layers=4", "model.tie_embeddings=false", "optimizer.trainable=new_layers",
              "optimizer.new_layers=[false,true,false,true]", "optimizer.weight_decay=0.5", "optimizer.clip_norm=0.1"]


def _full_moments(cfg, mask, lr):
    """The formulation before `only_rows`: AdamW moments for every weight, frozen updates zeroed afterwards."""
    o = cfg.optimizer
    zero_frozen = optax.GradientTransformation(
        lambda _: optax.EmptyState(), lambda u, s, p=None: (jax.tree.map(jnp.multiply, u, mask), s))
    return optax.chain(optax.clip_by_global_norm(o.clip_norm),
                       optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask),
                       zero_frozen)


def _moments(opt_state):
    adam = opt_state[1][0]
    assert isinstance(adam, optax.ScaleByAdamState)
    return adam.mu, adam.nu


def _opt_bytes(opt_state):
    return sum(x.nbytes for x in jax.tree.leaves(opt_state))


def test_new_layers_keep_moments_for_new_rows_only(tmp_path):
    from sailor2_jax.train import checkpoint as ckpt
    from sailor2_jax.model import run_dir

    cfg, mesh, step, state, batch = _setup(NEW_LAYERS)
    trainable_bytes = sum(w.nbytes // 2 for w in jax.tree.leaves(state.params["layers"]))  # 2 of 4 layers are new
    assert trainable_bytes and _opt_bytes(state.opt_state) == 2 * trainable_bytes + 2 * 4  # mu, nu; 2 int32 counts
    for moments in _moments(state.opt_state):
        for name, w in state.params["layers"].items():
            assert moments["layers"][name].shape == (2,) + w.shape[1:], name
            assert moments["layers"][name].sharding == w.sharding, name  # the layers axis is never sharded
        for name in ("embed", "final_norm", "lm_head"):  # frozen: no arrays at all
            assert isinstance(moments[name], optax.MaskedNode) and not jax.tree.leaves(moments[name])
    _, _, _, full, _ = _setup([])
    assert _opt_bytes(full.opt_state) == 2 * sum(w.nbytes for w in jax.tree.leaves(full.params)) + 2 * 4

    # the smaller state goes through a checkpoint and back bitwise
    with jax.set_mesh(mesh):
        state, _ = step(state, global_batch(batch, mesh), None)
    mgr = ckpt.manager(tmp_path, 1, 1, async_save=False)
    data = SyntheticLM(8, 32, 256, seed=5, process_index=0, process_count=1)
    ckpt.save(mgr, state, cfg, cfg.model, data, step=1)
    target = run_dir.abstract_target(jax.tree.map(lambda x: x.sharding, state), state)
    restored = ckpt.restore(mgr, 1, target, None)
    mgr.close()
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, _host(restored), _host(state))


def test_new_row_moments_train_exactly_like_full_moments():
    results = []
    for make_tx in (None, _full_moments):
        _, mesh, step, state, batch = _setup(NEW_LAYERS, make_tx)
        before = _host(state.params)
        states = []
        with jax.set_mesh(mesh):
            for _ in range(3):
                state, _ = step(state, global_batch(batch, mesh), None)
                states.append(_host(state))  # before the next step donates it
        results.append(states)
    rows, full = results
    new = np.array([False, True, False, True])
    # one step: the same arithmetic on the same numbers, bitwise (CPU). Later steps' gradients come from differently
    # fused programs, so they may differ in the last bits.
    jax.tree.map(np.testing.assert_array_equal, rows[0].params, full[0].params)
    for got, want in zip(_moments(rows[0].opt_state), _moments(full[0].opt_state)):
        jax.tree.map(lambda g, w: np.testing.assert_array_equal(g, w[new]), got["layers"], want["layers"])
        assert not np.any(want["layers"]["q"][~new])  # the full formulation's moments of frozen rows: wasted zeros
    close = lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())
    jax.tree.map(close, rows[-1].params, full[-1].params)
    for got, want in zip(_moments(rows[-1].opt_state), _moments(full[-1].opt_state)):
        jax.tree.map(lambda g, w: close(g, w[new]), got["layers"], want["layers"])
    last = rows[-1].params
    for name, w in last["layers"].items():
        np.testing.assert_array_equal(w[~new], before["layers"][name][~new])  # old layers: untouched, no decay
        assert name.endswith("norm") or not np.array_equal(w[new], before["layers"][name][new]), name
    for name in ("embed", "final_norm", "lm_head"):
        np.testing.assert_array_equal(last[name], before[name])


def test_new_layers_optimiser_state_continues_a_stage_and_another_mask_is_refused(tmp_path):
    import orbax.checkpoint as ocp

    from sailor2_jax.model import run_dir
    from sailor2_jax.train.loop import train

    run = NEW_LAYERS + ["steps=2", "checkpoint.every=2", "log.progress=false", "log.tensorboard=false"]
    train(load(TrainConfig, None, BASE + run), tmp_path / "s1")
    stage2 = run + [f"init.checkpoint={tmp_path / 's1'}", "init.optimizer_state=true"]
    train(load(TrainConfig, None, BASE + stage2), tmp_path / "s2")
    saved = ocp.StandardCheckpointer().restore(run_dir.step_dir(tmp_path / "s2") / "train")["opt_state"]
    assert int(saved[1][0]["count"]) == 4 and saved[1][0]["mu"]["layers"]["q"].shape[0] == 2  # Adam went on
    with pytest.raises(ValueError, match="init.optimizer_state: .*trainable mask.*only in this run"):
        train(load(TrainConfig, None, BASE + stage2 + ["optimizer.trainable=all"]), tmp_path / "s3")


def test_weight_decay_skips_norms_and_biases():
    # an all-zero loss mask gives zero gradients: with lr > 0 only weight decay moves a weight
    _, mesh, step, state, batch = _setup(["optimizer.weight_decay=0.5"])
    before = _host(state.params)
    zero_batch = dict(batch, loss_mask=np.zeros_like(batch["loss_mask"]))
    with jax.set_mesh(mesh):
        state, _ = step(state, global_batch(zero_batch, mesh), None)
    after = _host(state.params)
    np.testing.assert_allclose(after["layers"]["q"], before["layers"]["q"] * (1 - 1e-2 * 0.5), rtol=1e-6)
    for name in ("attn_norm", "mlp_norm", "q_bias", "k_bias", "v_bias"):
        np.testing.assert_array_equal(after["layers"][name], before["layers"][name])
    np.testing.assert_array_equal(after["final_norm"], before["final_norm"])


@pytest.mark.parametrize("shape", ["exponential", "linear"])
def test_wsd_schedule_closed_form(shape):
    """lr(c) is the rate of update c, i.e. of step c + 1: step 1 trains one warmup increment above 0, step 10
    (warmup_steps) at the peak, the last step (100) at final_lr, and steps past the end stay there."""
    cfg = ScheduleConfig(kind="wsd", peak_lr=1e-4, final_lr=1e-5, warmup_steps=10, decay_steps=20,
                         decay_shape=shape)
    lr = lambda step: float(schedule(cfg, total_steps=100)(step - 1))
    assert lr(1) == pytest.approx(1e-5) and lr(5) == pytest.approx(5e-5)
    assert lr(10) == pytest.approx(1e-4) and lr(80) == pytest.approx(1e-4)
    mid = 1e-4 * 0.1 ** 0.5 if shape == "exponential" else (1e-4 + 1e-5) / 2
    assert lr(90) == pytest.approx(mid, rel=1e-5)
    assert lr(100) == pytest.approx(1e-5, rel=1e-5) and lr(150) == pytest.approx(1e-5, rel=1e-5)


def test_cosine_schedule_closed_form():
    lr = lambda step: float(schedule(ScheduleConfig(kind="cosine", peak_lr=1e-4, final_lr=1e-5, warmup_steps=10),
                                     total_steps=110)(step - 1))
    assert lr(10) == pytest.approx(1e-4)
    assert lr(60) == pytest.approx(1e-5 + (1e-4 - 1e-5) * 0.5, rel=1e-5)
    assert lr(110) == pytest.approx(1e-5, rel=1e-5)


def test_a_schedule_longer_than_its_run_is_refused():
    with pytest.raises(ValueError, match="warmup_steps \\(10\\) \\+ decay_steps \\(20\\) exceed the schedule's 25 steps"):
        schedule(ScheduleConfig(kind="wsd", warmup_steps=10, decay_steps=20), total_steps=25)


def test_the_same_settings_reuse_the_compiled_step_and_other_settings_do_not():
    cfg = load(TrainConfig, None, BASE)
    mesh = make_mesh(cfg.mesh)

    def step(cfg, micro_batches=1, with_reference=False):
        setup = setup_step(cfg, cfg.model, mesh)
        return setup, setup.compile(Objective(cfg.objective), mesh, micro_batches, with_reference)

    setup, first = step(cfg)
    again = step(load(TrainConfig, None, BASE))  # an equal config, loaded anew: a rerun in the same process
    assert again[0] is setup and again[1] is first
    for other in (cfg.replace(steps=20),  # the schedule's length is part of the program
                  cfg.replace(optimizer=cfg.optimizer.replace(weight_decay=0.5)),
                  cfg.replace(objective=cfg.objective.replace(logits_chunk=16)),
                  cfg.replace(compute=cfg.compute.replace(remat="none"))):
        assert step(other)[1] is not first, other
    assert step(cfg, micro_batches=2)[1] is not first and step(cfg, with_reference=True)[1] is not first
    # a copy with another optimiser (as the reference-optimiser tests make) builds its own step
    copy = dataclasses.replace(setup, tx=optax.sgd(1e-2))
    assert copy.compile(Objective(cfg.objective), mesh, 1, False) is not first
