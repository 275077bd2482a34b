"""What a compiled program does per step, read off its optimised HLO text, with every loop counted as often as it
runs.

XLA's `cost_analysis()` counts a while-loop body once — the scanned layers, the chunked LM head and the micro-batch
loop each run many times — and a custom kernel (Splash) as zero FLOPs, so its raw FLOPs are 12–280× too low for our
steps. This module walks the module's call graph instead: a while body counts as many times as its loop runs (the
trip count read from its condition), a fusion's dots count where the fusion runs, a conditional counts its
costliest branch. Per computation it totals
- matmul FLOPs: `dot` (2 × output elements × contracted size) and `convolution` (2 × output elements × kernel
  elements / output features), the ops the MXUs run;
- HBM bytes: operands + outputs of every top-level op (fusions included, their insides not), skipping views
  (bitcast, tuple, get-tuple-element) and buffers in on-chip memory (layout `S(1)`); an in-place update
  (`dynamic-update-slice`, `scatter`, or a fusion whose output is one) moves only what it writes (see `_traffic`),
  and the TPU's asynchronous copies and slices into VMEM (`copy-start`, `slice-start`) move what they copy once;
- ICI bytes per device of each collective, from its group size: all-gather and all-to-all move the output's
  (n−1)/n, reduce-scatter the input's (n−1)/n, all-reduce twice that, collective-permute the whole buffer;
- Mosaic kernel executions (`tpu_custom_call`) by name (`splash_mha_fwd…`, `splash_mha_dq…`) and the dims of
  their outputs, so the caller can add their FLOPs.
Shapes in a partitioned (SPMD) module are per device, so every figure is per device.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Callable

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5}
_ARRAY = re.compile(r"\b([a-z]+[0-9a-z]*)\[([0-9,]*)\](\{[^}]*\})?")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+) = (.*?) ([a-z][a-z0-9\-]*)\((.*)$")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+) \(.*\{\s*$")
_VIEWS = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id",
          "replica-id", "iota", "while", "call", "conditional", "opt-barrier"}
_COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute",
                "ragged-all-to-all")


@dataclasses.dataclass
class Cost:
    """Per-device totals of one computation (callees included, loops multiplied out)."""

    flops: float = 0.0          # matmul FLOPs (dot, convolution)
    kernel_flops: float = 0.0   # FLOPs of custom kernels, as the module's `kernel_flops` knows them
    hbm_bytes: float = 0.0      # bytes read and written in HBM by top-level ops
    bytes_accessed: float = 0.0  # the same in every memory space (what XLA's cost analysis counts)
    ici_bytes: float = 0.0      # bytes each device sends over the interconnect
    compute_bound_s: float = 0.0  # per-op roofline: time of the ops their FLOPs bound (at peak FLOP/s) ...
    memory_bound_s: float = 0.0   # ... and of those their HBM bytes bound (at the HBM bandwidth)
    kernels: Counter = dataclasses.field(default_factory=Counter)  # (kernel name, dims of each output) -> executions

    def add(self, other: "Cost", times: float = 1.0) -> None:
        self.flops += times * other.flops
        self.kernel_flops += times * other.kernel_flops
        self.compute_bound_s += times * other.compute_bound_s
        self.memory_bound_s += times * other.memory_bound_s
        self.hbm_bytes += times * other.hbm_bytes
        self.bytes_accessed += times * other.bytes_accessed
        self.ici_bytes += times * other.ici_bytes
        for k, v in other.kernels.items():
            self.kernels[k] += times * v


@dataclasses.dataclass
class _Instr:
    name: str
    shape: str
    opcode: str
    rest: str  # operands and attributes

    def operands(self) -> list[str]:
        depth, end = 1, 0
        for end, ch in enumerate(self.rest):
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                break
        return re.findall(r"%([\w.\-]+)", self.rest[:end])

    def attr(self, key: str) -> str | None:
        m = re.search(rf"\b{key}=(\{{[^}}]*\}}|\"[^\"]*\"|[^,\s{{}}()\"]+)", self.rest)
        return m.group(1) if m else None


def arrays(shape: str) -> list[tuple[str, tuple[int, ...], bool]]:
    """(dtype, dims, in HBM) of every array in a shape string (a tuple has several)."""
    out = []
    for dtype, dims, layout in _ARRAY.findall(shape):
        if dtype in _BYTES:
            out.append((dtype, tuple(int(d) for d in dims.split(",") if d), "S(1)" not in (layout or "")))
    return out


def _stored(dims: tuple[int, ...], layout: str) -> int:
    """Elements as stored: a TPU layout's tile (`{1,0:T(8,128)}`) pads the most minor dims to its multiples,
    and the memory moves whole tiles."""
    m = re.match(r"\{([\d,]*):T\(([\d,]+)\)", layout or "")
    if not m or not dims:
        return math.prod(dims)
    minor_to_major = [int(d) for d in m.group(1).split(",") if d]
    tile = [int(t) for t in m.group(2).split(",")]
    padded = list(dims)
    for dim, size in zip(minor_to_major, reversed(tile)):
        padded[dim] = -(-padded[dim] // size) * size
    return math.prod(padded)


def nbytes(shape: str, hbm_only: bool = False) -> float:
    """Bytes of a shape as stored (tile padding included); `hbm_only` leaves out on-chip buffers (`S(1)`)."""
    return sum(_BYTES[dtype] * _stored(tuple(int(d) for d in dims.split(",") if d), layout)
               for dtype, dims, layout in _ARRAY.findall(shape)
               if dtype in _BYTES and (not hbm_only or "S(1)" not in (layout or "")))


def _elements_of(shape: str) -> list[str]:
    """The arrays of a (possibly nested) tuple shape, each as its own shape string, in order."""
    return [f"{dtype}[{dims}]{layout}" for dtype, dims, layout in _ARRAY.findall(shape) if dtype in _BYTES]


def _elements(shape: str) -> int:
    return sum(math.prod(dims) for _, dims, _ in arrays(shape))


def _dims(shape: str) -> tuple[int, ...]:
    found = arrays(shape)
    return found[0][1] if found else ()


class HloModule:
    """The computations of one HLO module's text, and the per-step cost of its entry.

    With a chip's `peak_flops` and `hbm_bandwidth`, each top-level op also gets a roofline time, the larger of its
    FLOPs at peak and its HBM bytes at full bandwidth (`Cost.compute_bound_s` + `memory_bound_s`: ops run one
    after another, each at its own bound). `kernel_flops(name, output_dims)` gives a custom kernel's FLOPs (None:
    unknown, counted as zero). A loop whose trip count is a runtime value counts `runtime_trips` times (None: an
    error)."""

    def __init__(self, text: str, *, peak_flops: float | None = None, hbm_bandwidth: float | None = None,
                 kernel_flops: Callable[[str, tuple], float | None] | None = None, runtime_trips: int | None = None):
        self.peak_flops, self.hbm_bandwidth, self.kernel_flops = peak_flops, hbm_bandwidth, kernel_flops
        self.runtime_trips = runtime_trips
        self.computations: dict[str, list[_Instr]] = {}
        self.roots: dict[str, _Instr] = {}
        self.entry = ""
        current: list[_Instr] | None = None
        for line in text.splitlines():
            if current is None:
                m = _HEADER.match(line)
                if m:
                    name = m.group(2)
                    current = self.computations.setdefault(name, [])
                    if m.group(1):
                        self.entry = m.group(2)
                continue
            # a computation ends with "}" (or "}, execution_thread=..." for one run on another core, e.g. the
            # SparseCore scatter the server's insert lowers to)
            if line.strip() == "}" or line.startswith("}, execution_thread="):
                current = None
                continue
            m = _INSTR.match(line)
            if m:
                current.append(_Instr(*m.groups()[1:]))
                if m.group(1):
                    self.roots[name] = current[-1]
            elif current:  # an attribute value with line breaks (kernel metadata) continues the instruction
                current[-1].rest += "\n" + line
        if not self.entry:
            raise ValueError("HLO text without an ENTRY computation")
        self.shapes = {c: {i.name: i.shape for i in instrs} for c, instrs in self.computations.items()}
        self.fused = {i.attr("calls").lstrip("%") for instrs in self.computations.values() for i in instrs
                      if i.opcode == "fusion" and i.attr("calls")}
        # buffers copied by a plain copy-start (instruction names are unique in a module)
        self._copied = {o for instrs in self.computations.values() for i in instrs if i.opcode == "copy-start"
                        and "cross_program_prefetch_index=" not in i.rest for o in i.operands()[:1]}
        self._memo: dict[str, Cost] = {}
        self._io: dict[str, tuple[list[float | None], float]] = {}

    def cost(self, computation: str | None = None) -> Cost:
        name = computation or self.entry
        if name not in self._memo:
            self._memo[name] = self._cost(name)
        return self._memo[name]

    def trip_count(self, condition: str, init: list[str], caller: str) -> int:
        """Iterations of a `while` whose condition is `counter < constant` (JAX's scans and fori loops count
        up by one from the init value); the comparison may sit in a fusion of its own."""
        instrs = self.computations[condition]
        consts = {i.name: int(m.group(1)) for i in instrs if i.opcode == "constant"
                  and (m := re.match(r"(-?\d+)\)", i.rest))}
        gtes = {i.name: int(i.attr("index")) for i in instrs if i.opcode == "get-tuple-element"}
        for i in instrs:
            operands = i.operands()
            if i.opcode == "fusion":  # a wrapped compare: its parameters are the fusion's operands
                inner = self.roots.get(i.attr("calls").lstrip("%"))
                if inner is None or inner.opcode != "compare" or "direction=LT" not in inner.rest:
                    continue
                params = {j.name: int(re.match(r"(\d+)", j.rest).group(1))
                          for j in self.computations[i.attr("calls").lstrip("%")] if j.opcode == "parameter"}
                operands = [operands[params[o]] if o in params else o for o in inner.operands()]
            elif i.opcode != "compare" or "direction=LT" not in i.rest:
                continue
            a, b = (operands + [None, None])[:2]
            if b in consts and a in gtes:
                start = 0
                init_tuple = next((j for j in self.computations[caller] if j.name == (init or [None])[0]), None)
                if init_tuple is not None and init_tuple.opcode == "tuple":
                    counter = init_tuple.operands()[gtes[a]]
                    start = next((int(m.group(1)) for j in self.computations[caller] if j.name == counter
                                  and j.opcode == "constant" and (m := re.match(r"(-?\d+)\)", j.rest))), 0)
                return max(consts[b] - start, 0)
        raise ValueError(f"while condition {condition}: no `counter < constant` comparison to read a trip count from")

    def _trips(self, condition: str, init: list[str], caller: str) -> int:
        """The trip count from the condition; for a loop that stops on a runtime value (the decode loop runs until
        its rows are done), the caller's `runtime_trips` where given."""
        try:
            return self.trip_count(condition, init, caller)
        except ValueError:
            if self.runtime_trips is None:
                raise
            return self.runtime_trips

    def _cost(self, name: str) -> Cost:
        total = Cost()
        shapes = self.shapes[name]
        top_level = name not in self.fused
        for ins in self.computations[name]:
            op = ins.opcode
            if op == "while":
                body, cond = ins.attr("body").lstrip("%"), ins.attr("condition").lstrip("%")
                known = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins.rest)
                trips = int(known.group(1)) if known else self._trips(cond, ins.operands(), name)
                total.add(self.cost(body), trips)
                total.add(self.cost(cond), trips + 1)
                continue
            if op == "conditional":
                branches = re.findall(r"%([\w.\-]+)", ins.attr("branch_computations") or "") or [
                    b.lstrip("%") for b in (ins.attr("true_computation"), ins.attr("false_computation")) if b]
                if branches:
                    total.add(max((self.cost(b) for b in branches), key=lambda c: c.flops))
                continue
            if op in ("call", "async-start") and ins.attr("calls"):
                total.add(self.cost(ins.attr("calls").lstrip("%")))
                continue
            flops = 0.0  # this op's own FLOPs (a fusion's: those of the ops fused in it)
            if op == "fusion" and ins.attr("calls"):
                inner = self.cost(ins.attr("calls").lstrip("%"))
                total.add(inner)
                flops = inner.flops + inner.kernel_flops
            elif op == "dot":
                lhs = _dims(shapes.get(ins.operands()[0], ""))
                contracted = [int(d) for d in re.findall(r"\d+", ins.attr("lhs_contracting_dims") or "")]
                flops = 2.0 * _elements(ins.shape) * math.prod(lhs[d] for d in contracted)
                total.flops += flops
            elif op == "convolution":
                flops = _conv_flops(ins, shapes)
                total.flops += flops
            elif op == "custom-call" and ins.attr("custom_call_target") == '"tpu_custom_call"':
                # a Pallas/Mosaic kernel, named by its caller, with the dims of its outputs
                key = (ins.name.rsplit(".", 1)[0], tuple(d for _, d, _ in arrays(ins.shape)))
                total.kernels[key] += 1
                flops = (self.kernel_flops(*key) if self.kernel_flops else None) or 0.0
                total.kernel_flops += flops
            base = op.removesuffix("-start")
            if base in _COLLECTIVES:
                total.ici_bytes += self._collective_bytes(ins, base, name, shapes)
            if top_level and op not in _VIEWS and not op.endswith("-done"):
                hbm = self._traffic(ins, shapes, hbm_only=True)
                total.hbm_bytes += hbm
                total.bytes_accessed += self._traffic(ins, shapes, hbm_only=False)
                if self.peak_flops and self.hbm_bandwidth:
                    compute_s, memory_s = flops / self.peak_flops, hbm / self.hbm_bandwidth
                    if compute_s >= memory_s:
                        total.compute_bound_s += compute_s
                    else:
                        total.memory_bound_s += memory_s
        return total

    def _traffic(self, ins: _Instr, shapes: dict[str, str], hbm_only: bool) -> float:
        """Bytes one top-level op reads and writes. A slice reads only its slice and an in-place update writes
        only its update — inside a fusion too, which is how a scanned loop reads one layer's weights and saves one
        layer's activations out of the stacked [L, ...] buffers, and how a decode step writes one cache column per
        row. `hbm_only` leaves out on-chip buffers.

        In place, and why that can be read off the text: `dynamic-update-slice` and `scatter` (and a fusion whose
        output is one of them applied to one of its parameters) are XLA's in-place ops — buffer assignment gives
        the result the operand's buffer (HloDataflowAnalysis::GetInPlaceInputOutputPairs), and copy insertion,
        which has run on the compiled module, writes an explicit `copy` of the operand first wherever it must stay
        intact (a parameter not donated, a value read again later). That `copy` is a top-level op of its own,
        counted here at its full size; the update itself moves its update rows (read, then written) and its
        indices. An update into a buffer made inside its fusion (a broadcast) writes the whole output."""
        size = lambda shape: nbytes(shape, hbm_only)
        operands = ins.operands()
        if ins.opcode == "fusion" and ins.attr("calls"):
            reads, writes = self._fusion_io(ins.attr("calls").lstrip("%"))
            total = 0.0
            for o, sliced in zip(operands, reads):
                whole = shapes.get(o, "")
                total += size(whole) if sliced is None else (size(whole) and sum(nbytes(s) for s in sliced))
            for (dtype, dims, layout), update in zip(_ARRAY.findall(ins.shape), writes):
                element = f"{dtype}[{dims}]{layout}"
                total += size(element) if update is None else (size(element) and nbytes(update))
            return total
        if ins.opcode in ("dynamic-slice", "slice", "slice-start"):
            # slice-start, the TPU's asynchronous slice (a prefetch into VMEM), is shaped ((operand), slice,
            # context): it reads its slice where the operand lives and writes it where the slice lives
            out = _elements_of(ins.shape)[len(operands)] if ins.opcode == "slice-start" else ins.shape
            source = shapes.get(operands[0], "") if operands else ""
            return (nbytes(out) if not hbm_only or nbytes(source, hbm_only=True) else 0.0) + size(out)
        if ins.opcode == "copy-start":  # shaped (destination, source, context): the source is the operand
            if "cross_program_prefetch_index=" in ins.rest and operands and operands[0] in self._copied:
                # a prefetch across runs that the program repeats (XLA's end-of-program prefetch copies the same
                # buffer again, for the next run to find in VMEM): one of the two counts per run
                return 0.0
            return size(shapes.get(operands[0], "")) + size(_elements_of(ins.shape)[0])
        if ins.opcode == "dynamic-update-slice":
            return 2 * size(shapes.get(operands[1], ""))
        if ins.opcode == "scatter":
            n = len(operands) // 2  # operands: n buffers updated in place, the indices, n updates
            return size(shapes.get(operands[n], "")) + 2 * sum(size(shapes.get(o, "")) for o in operands[n + 1:])
        return size(ins.shape) + sum(size(shapes.get(o, "")) for o in operands)

    def _fusion_io(self, name: str) -> tuple[list[list[str] | None], list[str | None]]:
        """What a fused computation touches: per parameter, the shapes of the slices it reads (None: all of it);
        per output element, the shape of the in-place update written into it (None: all of it)."""
        if name not in self._io:
            self._io[name] = self._fusion_io_uncached(name)
        return self._io[name]

    def _fusion_io_uncached(self, name: str) -> tuple[list[list[str] | None], list[str | None]]:
        instrs = self.computations[name]
        by_name = {i.name: i for i in instrs}
        users: dict[str, list[tuple[_Instr, int]]] = {}
        for i in instrs:
            for pos, o in enumerate(i.operands()):
                users.setdefault(o, []).append((i, pos))

        root = self.roots.get(name, instrs[-1])
        outputs = {root.name} | (set(root.operands()) if root.opcode == "tuple" else set())

        def read(value: str, updated: bool = False) -> list[str] | None:
            """The slices of `value` the fusion reads; `updated`: value is a buffer updated in place, whose
            passing on to the output reads nothing (unlike a value passed on whole, e.g. by a bitcast fusion that
            hands a weight to the matmul beside it)."""
            if value in outputs and not updated:
                return None
            parts: list[str] = []
            for user, pos in users.get(value, []):
                if user.opcode in ("bitcast", "reshape"):
                    part = read(user.name, updated)
                elif user.opcode in ("dynamic-slice", "slice", "gather") and pos == 0:
                    part = [user.shape]
                elif (user.opcode == "dynamic-update-slice" and pos == 0) or (
                        user.opcode == "scatter" and pos < len(user.operands()) // 2):
                    part = read(user.name, updated=True)  # the buffer updated in place: what reads it after
                elif user is root and root.opcode == "tuple":  # only an updated buffer gets here (see above)
                    part = []
                elif user.opcode == "fusion" and user.attr("calls"):  # a fusion nested in this one
                    part = self._fusion_io(user.attr("calls").lstrip("%"))[0][pos]
                else:
                    return None
                if part is None:
                    return None
                parts += part
            return parts

        def written(value: str) -> str | None:
            """The updates an in-place chain (bitcasts, dynamic-update-slices, scatters) writes into one of the
            fusion's parameters ("" for the parameter itself); None for a buffer made inside the fusion, which is
            written whole."""
            i = by_name.get(value)
            if i is None or i.opcode not in ("parameter", "bitcast", "dynamic-update-slice", "scatter"):
                return None
            if i.opcode == "parameter":
                return ""
            operands = i.operands()
            n = len(operands) // 2 if i.opcode == "scatter" else 1  # scatter: n buffers, the indices, n updates
            buffers = [written(o) for o in operands[:n]]
            if None in buffers:
                return None
            new = {"bitcast": [], "dynamic-update-slice": operands[1:2], "scatter": operands[n + 1:]}[i.opcode]
            return " ".join(buffers + [self.shapes[name].get(o, "") for o in new]).strip()

        def update(i: _Instr) -> str | None:
            return written(i.name) or None  # an output that is a parameter passed through is counted whole

        params = sorted((int(re.match(r"(\d+)", i.rest).group(1)), i.name) for i in instrs if i.opcode == "parameter")
        elements = [by_name.get(o) for o in root.operands()] if root.opcode == "tuple" else [root]
        return [read(n) for _, n in params], [update(e) if e is not None else None for e in elements]

    def _collective_bytes(self, ins: _Instr, base: str, computation: str, shapes: dict[str, str]) -> float:
        size = max((_BYTES[dt] * math.prod(d) for dt, d, _ in arrays(ins.shape)), default=0)
        if base == "collective-permute":
            return size
        n = _group_size(ins.rest)
        if n <= 1:
            return 0.0
        share = (n - 1) / n
        if base == "all-reduce" and computation.startswith("all-reduce-scatter"):
            return size * share  # the reduce-scatter TPU fusions are written as an all-reduce of the input
        if base == "reduce-scatter":
            return size * n * share
        if base == "all-reduce":
            return 2 * size * share
        return size * share


def _conv_flops(ins: _Instr, shapes: dict[str, str]) -> float:
    """2 × output batch × output features × input features × Π over spatial dims of the (output position, kernel
    tap) pairs that read real input (not padding), as XLA's own cost analysis counts a convolution. The TPU
    compiler writes matmuls as convolutions, some with a spatial window over padding standing in for a batch
    dimension (`window={size=1x14 pad=0_0x13_13}`), so the padding must not count."""
    lhs_labels, rest = ins.attr("dim_labels").split("_", 1)
    rhs_labels, out_labels = rest.split("->")
    operands = ins.operands()
    lhs, rhs, out = _dims(shapes.get(operands[0], "")), _dims(shapes.get(operands[1], "")), _dims(ins.shape)
    window = re.search(r"window=\{([^}]*)\}", ins.rest)
    fields = dict(f.split("=", 1) for f in window.group(1).split()) if window else {}
    spatial = sorted(int(c) for c in out_labels if c.isdigit())
    per_dim = lambda key, default: ([int(v) for v in fields[key].split("x")] if key in fields
                                    else [default] * len(spatial))
    sizes, strides = per_dim("size", 1), per_dim("stride", 1)
    lhs_dilate, rhs_dilate = per_dim("lhs_dilate", 1), per_dim("rhs_dilate", 1)
    pads = ([tuple(int(v) for v in p.split("_")) for p in fields["pad"].split("x")] if "pad" in fields
            else [(0, 0)] * len(spatial))
    pairs = 1
    for d in spatial:
        n_in, n_out = lhs[lhs_labels.index(str(d))], out[out_labels.index(str(d))]
        dilated = (n_in - 1) * lhs_dilate[d] + 1
        count = 0
        for k in range(sizes[d]):  # output positions o whose tap k lands on a real (undilated) input element
            offset = k * rhs_dilate[d] - pads[d][0]
            if lhs_dilate[d] == 1:
                lo = max(0, -(offset // strides[d]))  # ceil(-offset / stride)
                hi = min(n_out - 1, (dilated - 1 - offset) // strides[d])
                count += max(0, hi - lo + 1)
            else:
                count += sum(1 for o in range(n_out) if 0 <= (pos := o * strides[d] + offset) < dilated
                             and pos % lhs_dilate[d] == 0)
        pairs *= count
    return 2.0 * out[out_labels.index("b")] * out[out_labels.index("f")] * rhs[rhs_labels.index("i")] * pairs


def _group_size(rest: str) -> int:
    """Devices in one replica group: `{{0,1,2,3},...}`, iota `[groups,size]<=[n]`, or mesh axes
    `mesh['axis_0'=4,'axis_1'=2] {'axis_0'}`."""
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", rest)
    if m:
        sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'=(\d+)", m.group(1))}
        return math.prod(sizes[a] for a in re.findall(r"'([^']+)'", m.group(2)))
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]", rest)
    if m:
        return int(m.group(2))
    m = re.search(r"replica_groups=\{\{([^}]*)\}", rest)
    if m:
        return len(m.group(1).split(","))
    return 1
