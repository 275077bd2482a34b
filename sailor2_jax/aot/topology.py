"""TPU slices as compile targets on any machine: slice names, chip figures, compile-only devices, and the TPU
compiler's own HBM verdict.

With the `libtpu` wheel installed, `jax.experimental.topologies` gives the devices of any TPU slice without a TPU;
a program lowered over a mesh of them compiles with the real TPU compiler. Cloud names count differently per
generation: `v5p-N` counts TensorCores (two per chip), `v5e-N`/`v6e-N` count chips; `v5p:4x4x4` (libtpu's own
form) names the chip grid directly.

The compiler checks a program against the chip's HBM itself, but reports its totals only in libtpu's log
(`XLA::TPU program HBM usage: 91.71G / 95.74G`, `Total hbm usage >= 94.76G`), and refuses a program whose
temporaries alone exceed HBM. `HbmVerdict` reads those lines for one compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import importlib.util
import os
import re
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Chip:
    generation: str
    device_kind: str       # as jax names the device
    peak_flops: float      # dense bf16 FLOP/s
    hbm_bandwidth: float   # bytes/s
    ici_bandwidth: float   # bytes/s per chip, bidirectional over all its links
    hbm_limit: float       # bytes the TPU compiler lets a program use (its log, libtpu 0.0.42)
    cores_per_chip: int    # TensorCores: what Cloud's v5p-N counts
    shapes: dict[int, str]  # chips -> libtpu's slice shape for Cloud names


_GiB = 2 ** 30
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
              512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16", 6144: "16x16x24"}
_SHAPES_2D = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
# Peak FLOP/s and bandwidths: the Cloud TPU documentation's pages for each generation.
CHIPS = {
    "v5p": Chip("v5p", "TPU v5", 459e12, 2765e9, 1200e9, 95.74 * _GiB, 2, _SHAPES_3D),
    "v5e": Chip("v5e", "TPU v5 lite", 197e12, 819e9, 400e9, 15.75 * _GiB, 1, _SHAPES_2D),
    "v6e": Chip("v6e", "TPU v6 lite", 918e12, 1638e9, 800e9, 31.25 * _GiB, 1, _SHAPES_2D),
}
_ALIASES = {"v5litepod": "v5e"}


@dataclasses.dataclass(frozen=True)
class Slice:
    name: str       # as given
    topology: str   # libtpu's name, e.g. "v5p:4x4x4"
    chip: Chip
    chips: int

    def devices(self) -> list:
        """The slice's compile-only devices (one per chip)."""
        return _devices(self.topology)


def parse_slice(name: str) -> Slice:
    """`v5p-128` (TensorCores), `v6e-64` / `v5e-16` (chips), or libtpu's `v5p:4x4x4` / `v6e:8x8`."""
    known = ", ".join(sorted(CHIPS))
    m = re.fullmatch(r"(v\d+[a-z]*)(?:-(\d+)|:(\d+(?:x\d+)+))", name.strip().lower())
    if not m or _ALIASES.get(m.group(1), m.group(1)) not in CHIPS:
        raise ValueError(f"--topology {name!r}: expected a Cloud TPU name such as v5p-128, v6e-64, v5e-16 "
                         f"or a slice shape such as v5p:4x4x4, v6e:8x8 (generations: {known})")
    chip = CHIPS[_ALIASES.get(m.group(1), m.group(1))]
    if m.group(3):
        shape = m.group(3)
        chips = 1
        for d in shape.split("x"):
            chips *= int(d)
        if shape.count("x") + 1 != (3 if chip.shapes is _SHAPES_3D else 2):
            raise ValueError(f"--topology {name!r}: {chip.generation} slices are "
                             f"{'3-D (AxBxC)' if chip.shapes is _SHAPES_3D else '2-D (AxB)'}")
    else:
        count = int(m.group(2))
        if count % chip.cores_per_chip:
            raise ValueError(f"--topology {name!r}: {chip.generation}-N counts TensorCores, "
                             f"{chip.cores_per_chip} per chip")
        chips = count // chip.cores_per_chip
        if chips not in chip.shapes:
            sizes = ", ".join(f"{chip.generation}-{c * chip.cores_per_chip}" for c in sorted(chip.shapes))
            raise ValueError(f"--topology {name!r}: not a {chip.generation} slice size; known: {sizes} "
                             f"(or give the shape, e.g. {chip.generation}:{chip.shapes[64]})")
        shape = chip.shapes[chips]
    return Slice(name, f"{chip.generation}:{shape}", chip, chips)


def configure_libtpu() -> None:
    """Set libtpu up for compiling only; takes effect if called before libtpu is loaded (the first topology).

    libtpu writes its log lines as they happen (it buffers them otherwise), so a compilation's HBM verdict can be
    read as soon as it returns; and it skips the machine-wide lock a process driving real chips takes, so several
    compilations (and other programs with libtpu) can run side by side."""
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    args = os.environ.get("LIBTPU_INIT_ARGS", "")
    if "--logbuflevel" not in args:
        os.environ["LIBTPU_INIT_ARGS"] = f"{args} --logbuflevel=-1".strip()


@functools.cache
def _devices(topology: str) -> list:
    if importlib.util.find_spec("libtpu") is None:
        raise ValueError("compiling for a TPU needs the TPU compiler: pip install 'libtpu==0.0.42.*' (the version "
                         "jax 0.10 pins; `pip install -e .[tpu]`)")
    configure_libtpu()
    from jax.experimental import topologies

    # Loading libtpu off a TPU VM, its runtime looks for the VM's workers and accelerator type (a screen of
    # warnings, though compile-only devices need neither). Placeholders while it loads, and only then: a
    # TPU_WORKER_HOSTNAMES left set would make later jobs of this process believe they run on a pod.
    placeholders = {"TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost", "TPU_ACCELERATOR_TYPE": "v5p-8"}
    saved = {k: os.environ.get(k) for k in placeholders}
    if not tpu_attached():
        os.environ.update({k: v for k, v in placeholders.items() if saved[k] is None})
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
    except Exception as e:  # libtpu's own message names what it refused
        raise ValueError(f"libtpu refused topology {topology!r}: {str(e).splitlines()[0]}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def tpu_attached() -> bool:
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))  # v4/v5e, v5p/v6e chips


_SIZE = re.compile(r"([\d.]+)([KMGT]?)B?\b")
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def _size(text: str) -> float:
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a libtpu size: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


class HbmVerdict:
    """The TPU compiler's HBM figures for the compilation run inside `with HbmVerdict() as v:` (from libtpu's log
    file for this process, read from where it stood when the block began). Attributes stay None where the log
    holds no verdict (libtpu loaded before `configure_libtpu`, another log format)."""

    program: float | None = None   # the program's own HBM (temporaries, code, scoped memory)
    total: float | None = None     # program + arguments + the runtime's reserve: what must fit
    limit: float | None = None

    def __enter__(self) -> "HbmVerdict":
        self._file = self._log_file()
        self._offset = self._file.stat().st_size if self._file else 0
        return self

    def __exit__(self, *exc) -> None:
        log = self._log_file()
        if log is None:
            return
        with log.open(errors="replace") as f:
            f.seek(self._offset if log == self._file else 0)
            self.parse(f.read())

    def parse(self, text: str) -> None:
        for m in re.finditer(r"XLA::TPU program HBM usage: (\S+) / (\S+)", text):
            self.program, self.limit = _size(m.group(1)), _size(m.group(2))
        for m in re.finditer(r"Total hbm usage >= (\S+?):", text):
            self.total = _size(m.group(1))

    def parse_refusal(self, message: str) -> bool:
        """Read a RESOURCE_EXHAUSTED compile error ('...temporaries (327.41G) exceeds available HBM (95.74G)')."""
        m = re.search(r"\(([\d.]+[KMGT]?)\) exceeds available HBM \(([\d.]+[KMGT]?)\)", message)
        if m:
            self.program, self.limit = _size(m.group(1)), _size(m.group(2))
        return bool(m)

    @staticmethod
    def _log_file() -> Path | None:
        logs = Path(os.environ.get("TPU_LOG_DIR", "/tmp/tpu_logs")).glob(f"*.log.INFO.*.{os.getpid()}")
        return max(logs, key=lambda p: p.stat().st_mtime, default=None)
