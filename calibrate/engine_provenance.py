"""engine_provenance.yaml: the host, software, engine settings and command of an engine-validation run."""

from __future__ import annotations

import dataclasses
import datetime
import platform
import subprocess
from pathlib import Path


def _gpu_facts() -> dict:
    import torch
    out = {"gpu_name": "cpu", "gpu_memory_bytes": 0, "driver": "", "cuda": torch.version.cuda or ""}
    if torch.cuda.is_available():
        out["gpu_name"] = torch.cuda.get_device_name(0)
        out["gpu_memory_bytes"] = int(torch.cuda.get_device_properties(0).total_memory)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            out["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout else ""
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    return out


def _plain(value):
    """YAML-safe form: tuples to lists, Paths and other objects to strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)   # str subclasses (torch's version string) are not plain YAML
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def write_provenance(path: Path, facts: dict, settings, args, served: list[dict], stats: dict, timings: dict,
                     argv: list[str], engine_config: str = "eager", select: list[dict] | None = None) -> None:
    import yaml
    asked = {k: v for k, v in dataclasses.asdict(settings).items() if k != "resolved"}
    doc = {
        "what": "transformers continuous-batching engine serving Azure LLM 2023 conversation trace slices",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m calibrate.engine", *argv[1:]]),
        **_gpu_facts(),
        "python": platform.python_version(),
        "torch": facts.get("torch", ""),
        "transformers": facts.get("transformers", ""),
        "model_shape": args.shape,
        "weights": "random bf16 (LlamaConfig, no download); generation greedy, EOS disabled",
        "engine_config": engine_config,
        "engine_select": select or [],
        "engine_settings_asked": asked,
        "engine_settings_resolved": settings.resolved,
        "cuda_graphs": settings.resolved.get("use_cuda_graph", settings.use_cuda_graph),
        "attention_functions_available": facts.get("attention_functions", []),
        "cb_config_fields": facts.get("cb_config_fields", []),
        "trace": str(Path(args.trace).name),
        "clip": {"max_prompt_tokens": args.max_prompt, "max_output_tokens": args.max_output},
        "seed": args.seed,
        "python_gc": getattr(args, "gc", "default"),
        "torch_threads": getattr(args, "torch_threads", 0),
        "engines": "a fresh engine (manager, scheduler, KV cache) for the fit probes, each rate and the late probes",
        "rates": served,
        "fit_stats": stats,
        "timings_s": timings,
        "notes": ("fit_* phases are probes for the per-iteration CPU overhead; rate_* phases are the validation "
                  "points; warm_<rate> (with --prewarm) is the warm-up burst served on the rate's engine just "
                  "before it, times from its own start (the rate starts rate_start_after_warm_start_s later); "
                  "late_* repeat the probes after the rates. Times: perf_counter seconds; first/finish are the "
                  "engine's own token timestamps."),
    }
    with open(path, "w") as f:
        yaml.safe_dump(_plain(doc), f, sort_keys=False, width=110)
