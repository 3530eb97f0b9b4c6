"""The machine, library versions and git state stored with every result."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

from benchmarks.perf.settings import RunSettings, torch_module


def environment(settings: RunSettings) -> dict:
    """CPU model, cores, versions and date: stored with every result."""
    torch = torch_module()
    import transformers

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    for name in ("peft", "bitsandbytes", "accelerate"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
        "platform": platform.platform(),
        "versions": versions,
        "device": settings.device,
        "dtype": settings.dtype,
    }
    if settings.device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    info.update(git_state())
    return info


def git_state() -> dict:
    """The commit the measured code comes from, and whether the model/benchmark code differed from it."""
    root = Path(__file__).resolve().parents[2]
    state: dict = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            state["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(
                [
                    "git",
                    "status",
                    "--porcelain",
                    "--",
                    "modeling_mage",
                    "benchmarks/flops.py",
                    "benchmarks/perf",
                    "training",
                ],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            )
            state["git_uncommitted_model_or_benchmark_files"] = [line[3:] for line in dirty.stdout.splitlines()]
    return state
