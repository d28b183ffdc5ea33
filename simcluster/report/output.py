"""Writing result files all-or-nothing: into a temporary folder first, then moved into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def write_results(out_dir: str | Path, files: dict) -> list[Path]:
    """Write {filename: content} into out_dir. Content: str, bytes, dict/list (JSON) or a pandas
    DataFrame (CSV). Nothing appears in out_dir unless every file was written."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".simcluster-", dir=out.parent))
    try:
        for name, content in files.items():
            path = tmp / name
            if hasattr(content, "to_csv"):
                content.to_csv(path, index=False)
            elif isinstance(content, (dict, list)):
                path.write_text(json.dumps(content, indent=2, default=float))
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(str(content))
        out.mkdir(exist_ok=True)
        written = []
        for name in files:
            os.replace(tmp / name, out / name)
            written.append(out / name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def emit_document(text: str, argv: list[str] | None = None) -> int:
    """Command-line tail of the doc generators: write `text` to argv[0], or print it. Returns 0."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
