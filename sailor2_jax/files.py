"""Files written atomically: a reader (or a rerun after a crash) sees the old file or the whole new one, never a
part. The text goes to a hidden temporary file beside the target, then replaces it in one rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, text: str | Iterable[str]) -> None:
    """`text` (a string, or strings written one after another) as `path`'s whole content, UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines([text] if isinstance(text, str) else text)
        os.chmod(tmp, 0o644)  # mkstemp's 0o600 would hide results from the other users of a shared run directory
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    write_atomic(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))
