"""Stop requests the loop honours at a step boundary: SIGTERM (what a spot/preemptible TPU VM or Slurm sends before
taking the machine) and Ctrl-C, and, on multi-host runs, JAX's coordinated preemption sync point.

One process: SIGTERM or SIGINT sets a flag; the loop finishes the step in flight, saves a checkpoint at that step,
waits until it is committed and returns. A second Ctrl-C aborts at once.

Several processes: JAX's preemption service (started by `jax.distributed.initialize`) catches SIGTERM on any host
and agrees with every host on one step (`multihost_utils.reached_preemption_sync_point`, called at every step), so
all processes save the same step. Ctrl-C keeps its default meaning there.
"""

from __future__ import annotations

import signal
import threading

import jax

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
    """Install with `with Preemption() as stop:`; `stop.reached(step)` after each step."""

    def __init__(self):
        self.requested: str | None = None  # the signal's name once one arrived
        self.multi_host = jax.process_count() > 1
        self._previous = {}

    def __enter__(self) -> Preemption:
        if not self.multi_host and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.requested = signal.Signals(signum).name

    def reached(self, step: int) -> bool:
        """True at the step where this run must save and stop (the same step on every process)."""
        if self.multi_host:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.requested = self.requested or "SIGTERM"
                return True
            return False
        return self.requested is not None
