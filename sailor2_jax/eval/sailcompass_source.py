"""Reading a SailCompass checkout without executing it: its OpenCompass dataset configs (`configs/datasets/**.py`)
and the few constants its loaders and evaluators hold, evaluated from the Python syntax tree by a small interpreter
that knows literals, names bound earlier in the file, f-strings, `str.format`, `+ - * %`, `chr`/`int`/`str`/`range`/
`dict`/`list`, subscripts and list/dict comprehensions, and nothing else (no attribute access but on strings, no
imports run: an imported name is a `Symbol` carrying its name, e.g. the `type=PPLInferencer` of a config).

SailCompass ships no licence, so its prompt text never enters this repository: `sailor2-jax eval-import
sailcompass` reads it from the user's checkout at run time (this module) and writes the user's own task files.
"""

from __future__ import annotations

import ast
import operator
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Symbol:
    """An imported (or otherwise unknown) name: a config's `type=GenInferencer`."""
    name: str


class Unsupported(ValueError):
    pass


_BUILTINS = {"chr": chr, "int": int, "str": str, "range": range, "dict": dict, "list": list, "len": len,
             "set": set, "tuple": tuple, "ord": ord}
_STR_METHODS = {"format", "join", "lower", "upper", "strip", "lstrip", "rstrip", "replace", "split"}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Mod: operator.mod}


class _Interpreter:
    def __init__(self, file: Path):
        self.file, self.env = file, {}

    def fail(self, node: ast.AST, what: str):
        raise Unsupported(f"{self.file}:{getattr(node, 'lineno', '?')}: {what} (not read: configs are parsed, "
                          "never run)")

    def module(self, tree: ast.Module) -> dict[str, Any]:
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    name = alias.asname or alias.name.split(".")[0]
                    self.env[name] = Symbol(alias.name)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                try:
                    self.env[stmt.targets[0].id] = self.eval(stmt.value, {})
                except Unsupported as e:  # kept as the error: raised only if something needs this name
                    self.env[stmt.targets[0].id] = e
        return self.env

    def eval(self, node: ast.AST, local: dict[str, Any]) -> Any:
        ev = lambda n: self.eval(n, local)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in local:
                return local[node.id]
            if node.id in self.env:
                value = self.env[node.id]
                if isinstance(value, Unsupported):
                    raise value
                return value
            if node.id in _BUILTINS:
                return _BUILTINS[node.id]
            self.fail(node, f"unknown name {node.id!r}")
        if isinstance(node, ast.JoinedStr):
            out = []
            for part in node.values:
                if isinstance(part, ast.Constant):
                    out.append(part.value)
                else:
                    value = ev(part.value)
                    value = {-1: value, 115: str(value), 114: repr(value), 97: ascii(value)}[part.conversion]
                    spec = ev(part.format_spec) if part.format_spec else ""
                    out.append(format(value, spec))
            return "".join(out)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [ev(e) for e in node.elts]
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            out = {}
            for k, v in zip(node.keys, node.values):
                if k is None:
                    out.update(ev(v))
                else:
                    out[ev(k)] = ev(v)
            return out
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Subscript):
            return ev(node.value)[ev(node.slice)]
        if isinstance(node, ast.Attribute):
            base = ev(node.value)
            if isinstance(base, Symbol):
                return Symbol(f"{base.name}.{node.attr}")
            if isinstance(base, str) and node.attr in _STR_METHODS:
                return getattr(base, node.attr)
            self.fail(node, f"attribute {node.attr!r}")
        if isinstance(node, ast.Call):
            func = ev(node.func)
            args = [ev(a) for a in node.args]
            kwargs = {k.arg: ev(k.value) for k in node.keywords if k.arg is not None}
            if isinstance(func, Symbol):
                return Symbol(func.name)  # e.g. torch.float16(...): irrelevant to what is read
            if func in _BUILTINS.values() or getattr(func, "__self__", None).__class__ is str:
                return func(*args, **kwargs)
            self.fail(node, "call")
        if isinstance(node, (ast.ListComp, ast.DictComp)):
            return self._comprehension(node, local)
        self.fail(node, f"expression {type(node).__name__}")

    def _comprehension(self, node, local):
        if len(node.generators) != 1 or not isinstance(node.generators[0].target, ast.Name):
            self.fail(node, "comprehension with more than one plain loop")
        gen = node.generators[0]
        out = {} if isinstance(node, ast.DictComp) else []
        for value in self.eval(gen.iter, local):
            inner = {**local, gen.target.id: value}
            if not all(self._truth(c, inner) for c in gen.ifs):
                continue
            if isinstance(node, ast.DictComp):
                out[self.eval(node.key, inner)] = self.eval(node.value, inner)
            else:
                out.append(self.eval(node.elt, inner))
        return out

    def _truth(self, node, local):
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            a, b = self.eval(node.left, local), self.eval(node.comparators[0], local)
            ops = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.In: lambda x, y: x in y,
                   ast.NotIn: lambda x, y: x not in y}
            if type(node.ops[0]) in ops:
                return ops[type(node.ops[0])](a, b)
        self.fail(node, "condition")


def _parse(file: Path) -> ast.Module:
    with warnings.catch_warnings():  # SailCompass writes regexes as "\\s" in plain f-strings
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        return ast.parse(file.read_text(encoding="utf-8"), str(file))


def read_module(file: Path) -> dict[str, Any]:
    """The module-level names of a Python file, evaluated as the module docstring says."""
    return _Interpreter(file).module(_parse(file))


# --- dataset configs ----------------------------------------------------------------------------------------------

@dataclass
class DatasetConfig:
    """One entry of a config's `*_datasets` list: what SailCompass runs for one benchmark."""
    file: Path
    abbr: str
    dataset_type: str          # the loader class, e.g. M3EXAMVIDataset
    path: str                  # relative to the data directory, e.g. ./data/m3exam/vietnamese-questions-test.json
    input_columns: list[str]
    output_column: str
    template: dict             # OpenCompass' PromptTemplate.template: {begin, round} or {label: {begin, round}}
    inferencer: str            # GenInferencer | PPLInferencer
    max_out_len: int | None
    evaluator: str
    evaluator_args: dict = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        """A label → template mapping (PPL choice) rather than one template."""
        return not set(self.template) <= {"begin", "round", "end"}


def _name(value) -> str:
    if not isinstance(value, Symbol):
        raise ValueError(f"expected a class name, got {value!r}")
    return value.name.rsplit(".", 1)[-1]


def read_dataset_configs(file: Path) -> list[DatasetConfig]:
    """Every dataset entry of one config file; a ValueError names the file and what is missing."""
    env = read_module(file)
    lists = [v for k, v in env.items() if k.endswith("_datasets") and isinstance(v, list)]
    if not lists:
        raise ValueError(f"{file}: no `*_datasets` list")
    out = []
    for entry in (e for lst in lists for e in lst):
        try:
            infer, evaluate = entry["infer_cfg"], entry["eval_cfg"]
            evaluator = dict(evaluate["evaluator"])
            out.append(DatasetConfig(
                file=file, abbr=entry["abbr"], dataset_type=_name(entry["type"]), path=entry["path"],
                input_columns=list(entry["reader_cfg"]["input_columns"]),
                output_column=entry["reader_cfg"]["output_column"],
                template=infer["prompt_template"]["template"], inferencer=_name(infer["inferencer"]["type"]),
                max_out_len=infer["inferencer"].get("max_out_len"), evaluator=_name(evaluator.pop("type")),
                evaluator_args=evaluator))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{file}: dataset entry {entry.get('abbr', '?') if isinstance(entry, dict) else '?'}: "
                             f"cannot read {e!r}") from None
    return out


# --- constants in its Python modules ------------------------------------------------------------------------------

def _function(file: Path, name: str) -> ast.FunctionDef:
    for node in ast.walk(_parse(file)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise ValueError(f"{file}: no function {name}()")


def _assigned_list(file: Path, function: str, variable: str, local: dict | None = None) -> list:
    """The literal a function assigns to `variable` (a list, or `set([...])` as a list in source order)."""
    interp = _Interpreter(file)
    for node in ast.walk(_function(file, function)):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "set" and value.args:
                value = value.args[0]  # keep the source order of set([...])
            return list(interp.eval(value, local or {}))
    raise ValueError(f"{file}: {function}() assigns no {variable}")


def answer_labels(root: Path) -> list[str]:
    """The answer labels `general_pred_postprocess` cuts predictions at (lower-cased, as it compares them)."""
    return [s.lower() for s in _assigned_list(root / "sailor_text_postprocessors.py", "general_pred_postprocess",
                                              "prompts")]


def option_patterns(root: Path) -> list[str]:
    """`first_option_parse`'s patterns, then its cushion patterns, with `{options}` left as a placeholder."""
    file = root / "sailor_text_postprocessors.py"
    local = {"options": "{options}"}
    return (_assigned_list(file, "first_option_parse", "patterns", local)
            + _assigned_list(file, "first_option_parse", "cushion_patterns", local))


def evaluator_labels(root: Path, module: str, evaluator: str) -> list[str]:
    """The labels an option evaluator (M3Exam's, Belebele's) cuts a prediction at, in source order."""
    file = root / "datasets" / f"{module}.py"
    for node in _parse(file).body:
        if isinstance(node, ast.ClassDef) and node.name == evaluator:
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Assign) and any(getattr(t, "id", None) == "prompts" for t in sub.targets)):
                    value = sub.value.args[0] if isinstance(sub.value, ast.Call) else sub.value
                    return list(_Interpreter(file).eval(value, {}))
            return []
    raise ValueError(f"{file}: no class {evaluator}")


def loader_dicts(root: Path, module: str, key: str) -> dict:
    """The dict literal a loader's `preprocess` looks `example[key]` up in (`example[key] = trans[...]...`)."""
    file = root / "datasets" / f"{module}.py"
    last: dict | None = None
    interp = _Interpreter(file)
    for stmt in _function(file, "preprocess").body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict):
            last = interp.eval(stmt.value, {})
        elif (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Subscript)
              and isinstance(stmt.targets[0].slice, ast.Constant) and stmt.targets[0].slice.value == key):
            if last is None:
                raise ValueError(f"{file}:{stmt.lineno}: example[{key!r}] is set before any table")
            return last
    raise ValueError(f"{file}: preprocess() sets no example[{key!r}] from a table")


def loader_branches(root: Path, module: str, key: str) -> dict[str, str]:
    """{lang: value} of `if lang == 'x': example[key] = 'value'` chains in a loader's `preprocess`."""
    file = root / "datasets" / f"{module}.py"
    out: dict[str, str] = {}
    interp = _Interpreter(file)
    for node in ast.walk(_function(file, "preprocess")):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.comparators[0], ast.Constant)):
            for stmt in node.body:
                if (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Subscript)
                        and getattr(stmt.targets[0].slice, "value", None) == key):
                    out[node.test.comparators[0].value] = interp.eval(stmt.value, {})
    if not out:
        raise ValueError(f"{file}: preprocess() sets example[{key!r}] in no `if lang == ...` branch")
    return out
