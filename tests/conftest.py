import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    """Scenario files and samples are named relative to the repository root."""
    monkeypatch.chdir(ROOT)
    os.environ.setdefault("COLUMNS", "160")
