"""Where the data files live (profiles/) and how a named entry is read from them."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import yaml


class CatalogError(ValueError):
    """A named GPU, node or LLM that the catalog does not hold, or a malformed catalog file."""


def profiles_dir() -> Path:
    """The profiles/ folder: $SIMCLUSTER_PROFILES, else the one beside the package source."""
    env = os.environ.get("SIMCLUSTER_PROFILES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "profiles"


def names(kind: str) -> list[str]:
    """Sorted entry names of one catalog kind ('gpus', 'nodes', 'llms')."""
    folder = profiles_dir() / kind
    return sorted(p.stem for p in folder.glob("*.yaml"))


@lru_cache(maxsize=None)
def _read(path: str) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a mapping at the top level")
    return data


def read_entry(kind: str, name: str) -> dict:
    """The YAML mapping of catalog entry `name` of `kind`; CatalogError lists the known names."""
    path = profiles_dir() / kind / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(names(kind))
        singular = kind.rstrip("s").upper() if kind == "gpus" else kind.rstrip("s")
        raise CatalogError(f"unknown {singular} {name!r}; expected one of: {known}")
    return dict(_read(str(path)))
