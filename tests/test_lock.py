"""The environment the tests run in is the locked one: every installed distribution is pinned by
requirements-lock.txt at exactly its installed version (so `make test` and `make demo` on a fresh machine get the
set that passed), and the lock pins nothing twice."""

from __future__ import annotations

import importlib.metadata
import re

from jobs import ROOT

LOCK = ROOT / "requirements-lock.txt"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate(LOCK.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert match, f"{LOCK.name}:{n}: not an exact pin: {line!r}"
        name = _canonical(match[1])
        assert name not in pins, f"{LOCK.name}:{n}: {name} pinned twice"
        pins[name] = match[2]
    return pins


def test_every_installed_distribution_is_pinned_at_its_version():
    pins = _pins()
    installed = {_canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    installed.pop("sailor2-jax")  # the project itself (an editable install of this checkout)
    unpinned = sorted(name for name in installed if name not in pins)
    wrong = sorted(f"{name} {installed[name]} (lock: {pins[name]})" for name in installed
                   if name in pins and pins[name] != installed[name])
    assert not unpinned, f"installed but not in {LOCK.name}: {unpinned}"
    assert not wrong, f"installed at another version than {LOCK.name} pins: {wrong}"
    for must in ("jax", "jaxlib", "flax", "apache-beam", "ctranslate2", "transformers", "torch", "pip"):
        assert must in pins, must
