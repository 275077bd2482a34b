"""The pre-training loader on two real processes (jax.distributed + gloo, 4 CPU devices each) over the demo mixture.

Two processes build the stage-1 demo iterator on one (data, fsdp) mesh over all 8 devices, so each reads the share
of documents that `jax.process_index()/process_count()` give it. Their global batches must equal what this single
process computes by simulating the two hosts (loader.shard_index/shard_count, no mesh): host 0's rows, then host
1's, bit for bit; each process's iterator state must equal its simulated host's; and a fresh iterator restored
from a process's state must go on with the same global batches; and one process restored from both processes'
states (merged) must go on with the same global batches too.

Run as a script (`... worker OUT`), this file is one process of that job.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SEQ_LEN, BATCH_SIZE = 32, 8  # global batch: 4 rows per process, 1 per device
MESH = {"data": 2, "fsdp": 4, "tensor": 1}
BEFORE, AFTER = 3, 3  # batches drawn before the saved state, and after it
TIMEOUT_S = 120


def _canonical(state: dict) -> dict:
    return json.loads(json.dumps(state))  # as a checkpoint holds it


def _assert_bitwise(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    assert sorted(got) == sorted(want), what
    for k, w in want.items():
        g = got[k]
        assert (g.dtype, g.shape) == (w.dtype, w.shape), (what, k, g.dtype, g.shape, w.dtype, w.shape)
        assert g.tobytes() == w.tobytes(), f"{what}: {k} differs\n{g}\n{w}"


def _load(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path) as z:
        n = 1 + max(int(name.split("/")[0]) for name in z.files)
        out = [{} for _ in range(n)]
        for name in z.files:
            i, k = name.split("/")
            out[int(i)][k] = z[name]
    return out


@pytest.mark.slow
def test_two_processes_read_what_two_simulated_hosts_read(tmp_path):
    from jobs import job_envs, run_processes  # tests/ (this file also runs as a worker script)

    from sailor2_jax.data.loader import PretrainIterator, demo_iterator

    cmd = [sys.executable, __file__, "worker", str(tmp_path)]
    with ThreadPoolExecutor(1) as pool:  # the two processes run while this one simulates them
        job = pool.submit(run_processes, [cmd, cmd], job_envs(2, 4), TIMEOUT_S)

        hosts, states, its = [], [], []
        for h in range(2):
            shard = [f"loader.shard_index={h}", "loader.shard_count=2"]
            if h == 0:
                it = demo_iterator(1, seq_len=SEQ_LEN, batch_size=BATCH_SIZE, overrides=shard)
                first = it
            else:  # the same documents (seqio's output); only the share read from them differs
                cfg = first.cfg.replace(loader=first.cfg.loader.replace(shard_index=1, shard_count=2))
                it = PretrainIterator(cfg, first.batching, documents=first.documents)
            assert it.local_batch_size == BATCH_SIZE // 2
            batches = [next(it) for _ in range(BEFORE)]
            states.append(_canonical(it.get_state()))
            batches += [next(it) for _ in range(AFTER)]
            states.append(_canonical(it.get_state()))
            hosts.append(batches)
            its.append(it)
        job.result()

    want = [{k: np.concatenate([hosts[0][i][k], hosts[1][i][k]]) for k in hosts[0][i]}
            for i in range(BEFORE + AFTER)]
    assert set(want[0]) == {"tokens", "targets", "loss_mask", "segment_ids", "positions", "languages"}
    # the hosts really read different documents, and the batches after the saved state are new ones
    assert not np.array_equal(hosts[0][0]["tokens"], hosts[1][0]["tokens"])
    assert not any(np.array_equal(want[i]["tokens"], want[BEFORE]["tokens"]) for i in range(BEFORE))
    for p in range(2):
        out = tmp_path / f"process_{p}"
        glob, local = _load(out / "global.npz"), _load(out / "local.npz")
        resumed = _load(out / "resumed.npz")
        assert len(glob) == len(local) == BEFORE + AFTER and len(resumed) == AFTER
        for i in range(BEFORE + AFTER):
            _assert_bitwise(glob[i], want[i], f"process {p}, global batch {i}")
            _assert_bitwise(local[i], hosts[p][i], f"process {p}, its own rows of batch {i}")
        for i in range(AFTER):
            _assert_bitwise(resumed[i], want[BEFORE + i], f"process {p}, batch {BEFORE + i} after set_state")
        got = json.loads((out / "states.json").read_text())
        assert got["before"] == states[2 * p], f"process {p}: state after {BEFORE} batches"
        assert got["after"] == states[2 * p + 1], f"process {p}: state after {BEFORE + AFTER} batches"
        assert got["resumed"] == states[2 * p + 1], f"process {p}: state of the restored iterator"
    assert states[0] != states[2]  # each process has its own state

    # one process goes on from the two real processes' states, merged (a restore on another host count)
    real = [json.loads((tmp_path / f"process_{p}" / "states.json").read_text())["after"] for p in range(2)]
    cfg = first.cfg.replace(loader=first.cfg.loader.replace(shard_index=0, shard_count=1))
    alone = PretrainIterator(cfg, first.batching, documents=first.documents)
    alone.set_state(PretrainIterator.merge_states(real))
    for i in range(2):
        local = [next(it) for it in its]  # the simulated hosts go on too
        _assert_bitwise(next(alone), {k: np.concatenate([b[k] for b in local]) for k in local[0]},
                        f"one host after two, batch {BEFORE + AFTER + i}")


# --- one process of the job ------------------------------------------------------------------------------------

def _worker(out_dir: str) -> None:
    from sailor2_jax.train.multihost import initialize

    assert initialize(timeout_s=60)  # before any other JAX call
    import jax
    from jax.experimental import multihost_utils

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.data.loader import PretrainIterator, demo_iterator
    from sailor2_jax.sharding import batch_sharding, make_mesh

    p = jax.process_index()
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
    mesh = make_mesh(MeshConfig(**MESH))
    local_rows = BATCH_SIZE // 2

    def gathered(batch):
        """The global batch (as every process sees it), and this process's own rows."""
        glob, mine = {}, {}
        for k, v in batch.items():
            assert isinstance(v, jax.Array) and v.shape == (BATCH_SIZE, SEQ_LEN), (k, v.shape)
            assert v.sharding == batch_sharding(mesh, 2) and len(v.sharding.device_set) == 8, (k, v.sharding)
            glob[k] = np.asarray(multihost_utils.process_allgather(v, tiled=True))
            shards = sorted(v.addressable_shards, key=lambda s: s.index[0].start)
            # this process holds the contiguous rows [p * local_rows, (p + 1) * local_rows)
            assert [s.index[0].start for s in shards] == list(range(p * local_rows, (p + 1) * local_rows)), k
            mine[k] = np.concatenate([np.asarray(s.data) for s in shards])
        return glob, mine

    def save(name, batches):
        np.savez(out / f"{name}.npz", **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})

    out = Path(out_dir) / f"process_{p}"
    out.mkdir(parents=True)
    it = demo_iterator(1, mesh, seq_len=SEQ_LEN, batch_size=BATCH_SIZE)
    assert it.local_batch_size == local_rows
    drawn = [gathered(next(it)) for _ in range(BEFORE)]
    before = _canonical(it.get_state())
    drawn += [gathered(next(it)) for _ in range(AFTER)]
    after = _canonical(it.get_state())

    # a fresh pipeline (seqio's output reused: running the tasks again would cost seconds and test nothing here)
    fresh = PretrainIterator(it.cfg, it.batching, mesh, documents=it.documents)
    fresh.set_state(before)
    resumed = [gathered(next(fresh))[0] for _ in range(AFTER)]

    save("global", [g for g, _ in drawn])
    save("local", [m for _, m in drawn])
    save("resumed", resumed)
    (out / "states.json").write_text(json.dumps({"before": before, "after": after,
                                                 "resumed": _canonical(fresh.get_state())}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(*sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} worker OUT")
