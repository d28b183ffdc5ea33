"""provenance.yaml: where, when and with what software a set of measurements was taken.

Written as a small YAML subset by hand (flat keys, string/number scalars, one level of mapping
or list), so the suite needs nothing beyond torch and the standard library; any YAML reader
loads it.
"""

from __future__ import annotations

import datetime
import json
import platform
import socket
import subprocess
import sys
from pathlib import Path

REQUIRED_KEYS = ("gpu_name", "gpu_count", "driver", "cuda", "torch", "nccl", "triton",
                 "hostname", "date", "command", "python", "section_wall_s", "total_wall_s",
                 "notes")


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else ""
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def environment() -> dict:
    """Hardware and software facts of this host, as far as torch and nvidia-smi report them."""
    import torch
    cuda = torch.cuda.is_available()
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    nccl = ""
    if cuda:
        try:
            nccl = ".".join(str(x) for x in torch.cuda.nccl.version())
        except Exception:
            nccl = ""
    props = torch.cuda.get_device_properties(0) if cuda else None
    return {
        "gpu_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu_memory_bytes": props.total_memory if props else 0,
        "sm_count": props.multi_processor_count if props else 0,
        "l2_bytes": props.L2_cache_size if props else 0,
        "driver": _driver_version(),
        "cuda": torch.version.cuda or "",
        "torch": torch.__version__,
        "nccl": nccl,
        "triton": triton_version,
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
    }


def build(env: dict, command: list[str], section_wall_s: dict, total_wall_s: float,
          notes: list[str], started: datetime.datetime) -> dict:
    """The full provenance record, keys in REQUIRED_KEYS order first."""
    record = dict(env)
    record.update({
        "date": started.astimezone(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(command),
        "section_wall_s": {k: round(v, 2) for k, v in section_wall_s.items()},
        "total_wall_s": round(total_wall_s, 2),
        "notes": list(notes),
    })
    ordered = {k: record[k] for k in REQUIRED_KEYS if k in record}
    ordered.update({k: v for k, v in record.items() if k not in ordered})
    return ordered


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))      # a JSON string is a valid YAML double-quoted scalar


def to_yaml(record: dict) -> str:
    """YAML text of a mapping whose values are scalars, flat mappings or flat lists."""
    lines = []
    for key, value in record.items():
        if isinstance(value, dict):
            lines.append(f"{key}:" + (" {}" if not value else ""))
            lines += [f"  {k}: {_scalar(v)}" for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            lines.append(f"{key}:" + (" []" if not value else ""))
            lines += [f"  - {_scalar(v)}" for v in value]
        else:
            lines.append(f"{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def write(path: Path, record: dict) -> None:
    Path(path).write_text(to_yaml(record))


def command_line() -> list[str]:
    return [Path(sys.executable).name, "-m", "calibrate", *sys.argv[1:]]
