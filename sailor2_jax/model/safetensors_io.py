"""Safetensors directories, read lazily and written as a stream: the pieces behind import, export and expansion.

Reading: a Hugging Face model directory holds `model.safetensors` or shards listed in `model.safetensors.index.json`;
tensors are opened lazily and sliced on disk, so a process reads only the part its devices hold. Pickle-based
weights (`.bin`, `.pt`, ...) are refused: loading them can execute arbitrary code.

Writing: `write_shards` plans shards from (name, dtype, shape) alone, writes each file's header first and then each
tensor as it is produced, so peak host memory is one tensor, not one shard. Directories appear atomically: they are
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsDir:
    """Lazy, read-only access to the tensors of a HF model directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"model directory not found: {self.path}")
        index = self.path / INDEX_FILE
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (self.path / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
            weight_map = None
        else:
            pickles = sorted(p.name for p in self.path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise ValueError(f"{self.path}: refusing pickle-format weights {pickles} (loading pickle can run "
                                 "arbitrary code); convert them to safetensors first")
            raise FileNotFoundError(f"{self.path}: no {SINGLE_FILE} or {INDEX_FILE}")
        self._handles = {}
        self._stack = contextlib.ExitStack()
        self.key_to_file: dict[str, str] = {}
        for name in files:
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path}: shard {name} listed in {INDEX_FILE} is missing")
            handle = self._stack.enter_context(safe_open(str(self.path / name), framework="np"))
            self._handles[name] = handle
            for key in handle.keys():
                self.key_to_file[key] = name
        if weight_map is not None:
            absent = sorted(set(weight_map) - set(self.key_to_file))
            if absent:
                raise ValueError(f"{self.path}: tensors listed in {INDEX_FILE} but absent from the shards: {absent[:5]}")

    def keys(self) -> list[str]:
        return list(self.key_to_file)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._slice(key).get_shape())

    def read(self, key: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """The tensor `key`, or only `index` of it (read from disk without loading the rest)."""
        sl = self._slice(key)
        return sl[index] if index is not None else sl[:]

    def _slice(self, key: str):
        if key not in self.key_to_file:
            raise KeyError(f"{self.path}: tensor {key!r} not found")
        return self._handles[self.key_to_file[key]].get_slice(key)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "SafetensorsDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: its name, dtype and shape, and a function that produces its values on demand."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def parse_size(size: str | int) -> int:
    """'2GB', '500MB', '1GiB' or an int number of bytes."""
    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    s = size.strip().upper()
    for unit, mult in sorted(units.items(), key=lambda u: -len(u[0])):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def plan_shards(specs: Sequence[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def _write_file(path: Path, specs: Sequence[TensorSpec], metadata: dict[str, str]) -> None:
    header: dict = {"__metadata__": metadata}
    offset = 0
    for spec in specs:
        header[spec.name] = {"dtype": _CODES[np.dtype(spec.dtype)], "shape": list(spec.shape),
                             "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format asks for an 8-byte aligned data section
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for spec in specs:
            arr = np.ascontiguousarray(np.asarray(spec.produce()).astype(spec.dtype, copy=False))
            if arr.shape != spec.shape:
                raise ValueError(f"tensor {spec.name}: produced shape {arr.shape}, declared {spec.shape}")
            f.write(arr.tobytes())  # little-endian on every platform we run on
            del arr


def write_shards(out_dir: Path, specs: Sequence[TensorSpec], max_shard_bytes: int,
                 progress: Callable[[Iterator], Iterator] = iter) -> list[str]:
    """Write `specs` as one `model.safetensors` or as numbered shards plus an index; returns the file names."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names in export")
    shards = plan_shards(specs, max_shard_bytes)
    n = len(shards)
    files = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    metadata = {"format": "pt"}  # transformers expects this marker
    for file, shard in progress(list(zip(files, shards))):
        _write_file(out_dir / file, shard, metadata)
    if n > 1:
        index = {"metadata": {"total_size": sum(s.nbytes for s in specs)},
                 "weight_map": {s.name: f for f, shard in zip(files, shards) for s in shard}}
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return files


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `out_dir` in one rename."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"output directory exists: {out_dir} (pass overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
