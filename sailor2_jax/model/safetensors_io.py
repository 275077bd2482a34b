"""Safetensors directories, read lazily and written as a stream: the pieces behind import, export and expansion.

Reading: a Hugging Face model directory holds `model.safetensors` or shards listed in `model.safetensors.index.json`;
tensors are read lazily, only the rows a device holds, so a process reads only its part of the model. Pickle-based
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
import signal
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
READ_BLOCK_BYTES = 64 << 20

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class _Entry:
    file: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file


def _read_header(path: Path) -> dict[str, _Entry]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (truncated header)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file ({e})") from None
    size = path.stat().st_size
    entries = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {key} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        entry = _Entry(path, np.dtype(_DTYPES[info["dtype"]]), tuple(info["shape"]), 8 + n + begin)
        if end - begin != int(np.prod(entry.shape, dtype=np.int64)) * entry.dtype.itemsize or 8 + n + end > size:
            raise ValueError(f"{path}: tensor {key} has inconsistent data offsets (file truncated?)")
        entries[key] = entry
    return entries


class SafetensorsDir:
    """Lazy, read-only access to the tensors of a HF model directory.

    Reads use plain positioned reads of just the rows asked for, not mmap: mapped file pages count as resident
    memory of the process, which would double the apparent (and cgroup-accounted) footprint of an import.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"model directory not found: {self.path}")
        index = self.path / INDEX_FILE
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (self.path / SINGLE_FILE).is_file():
            files, weight_map = [SINGLE_FILE], None
        else:
            pickles = sorted(p.name for p in self.path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise ValueError(f"{self.path}: refusing pickle-format weights {pickles} (loading pickle can run "
                                 "arbitrary code); convert them to safetensors first")
            raise FileNotFoundError(f"{self.path}: no {SINGLE_FILE} or {INDEX_FILE}")
        self._entries: dict[str, _Entry] = {}
        for name in files:
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path}: shard {name} listed in {INDEX_FILE} is missing")
            self._entries.update(_read_header(self.path / name))
        if weight_map is not None:
            absent = sorted(set(weight_map) - set(self._entries))
            if absent:
                raise ValueError(f"{self.path}: tensors listed in {INDEX_FILE} but absent from the shards: "
                                 f"{absent[:5]}")
        self._fds: dict[Path, int] = {}

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entry(key).shape

    def dtype(self, key: str) -> np.dtype:
        return self._entry(key).dtype

    def read(self, key: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """The tensor `key`, or only `index` of it.

        Rows of the first axis are read from disk directly; when later axes are sliced too, rows are read in blocks
        of at most READ_BLOCK_BYTES and sliced into the result, so reading a device's columns of a large matrix never
        holds more than one block beyond the result itself.
        """
        e = self._entry(key)
        if not e.shape:
            return self._pread_rows(key, 0, 1).reshape(())
        index = tuple(index or ())
        rows = range(*(index[0] if index else slice(None)).indices(e.shape[0]))
        rest = index[1:]
        if rows.step != 1:  # never needed by our sharding rules: read everything, slice after
            return self._pread_rows(key, 0, e.shape[0])[(index[0], *rest)]
        if all(s == slice(None) for s in rest):
            return self._pread_rows(key, rows.start, len(rows))
        row_bytes = max(1, int(np.prod(e.shape[1:], dtype=np.int64)) * e.dtype.itemsize)
        block = max(1, READ_BLOCK_BYTES // row_bytes)
        out = None
        for r in range(rows.start, rows.stop, block):
            part = self._pread_rows(key, r, min(block, rows.stop - r))[(slice(None), *rest)]
            if out is None:
                out = np.empty((len(rows), *part.shape[1:]), e.dtype)
            out[r - rows.start:r - rows.start + len(part)] = part  # copied: the block is freed right away
        return out

    def _pread_rows(self, key: str, start: int, count: int) -> np.ndarray:
        e = self._entry(key)
        row_bytes = int(np.prod(e.shape[1:], dtype=np.int64)) * e.dtype.itemsize
        if e.file not in self._fds:
            self._fds[e.file] = os.open(e.file, os.O_RDONLY)
        buf = bytearray(count * row_bytes)
        view, done = memoryview(buf), 0
        while done < len(buf):  # pread may return short reads on large requests
            n = os.preadv(self._fds[e.file], [view[done:]], e.offset + start * row_bytes + done)
            if n == 0:
                raise ValueError(f"{e.file}: unexpected end of file reading {key}")
            done += n
        return np.frombuffer(buf, dtype=e.dtype).reshape((count,) + e.shape[1:])

    def _entry(self, key: str) -> _Entry:
        if key not in self._entries:
            raise KeyError(f"{self.path}: tensor {key!r} not found")
        return self._entries[key]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "SafetensorsDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: its name, dtype and shape, and a function that produces its values on demand —
    either the whole array or an iterator of consecutive row blocks (so a large matrix never sits on the host
    twice)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    produce: Callable[[], np.ndarray | Iterator[np.ndarray]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def blocks(self) -> Iterator[np.ndarray]:
        """The produced values as consecutive row blocks (a whole array is one block)."""
        produced = self.produce()
        return iter([produced]) if isinstance(produced, np.ndarray) else produced


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
            rows = 0
            for block in spec.blocks():
                block = np.ascontiguousarray(np.asarray(block).astype(spec.dtype, copy=False))
                if block.shape[1:] != spec.shape[1:]:
                    raise ValueError(f"tensor {spec.name}: produced block {block.shape}, declared {spec.shape}")
                f.write(block.view(np.uint8).data)  # no tobytes(): that would copy the block once more
                rows += block.shape[0] if block.ndim else 1
            if rows != (spec.shape[0] if spec.shape else 1):
                raise ValueError(f"tensor {spec.name}: produced {rows} rows, declared shape {spec.shape}")


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
    # Ctrl-C/SIGTERM held back until the directory exists and is known here: one landing between mkdtemp and the
    # `try` would otherwise leave it behind (seen in a test that signals the moment the directory appears)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal held back is raised here, inside the `try`
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); the result is a normal directory like mkdir's
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
