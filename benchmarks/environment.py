"""The environment block of every report, so figures from different machines never mix."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys


def _cpu_info() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def environment() -> dict:
    import cv2
    import numpy as np
    import onnxruntime as ort

    model, flags = _cpu_info()
    try:
        import tensorrt

        # None for the bare namespace package that tensorrt-stubs (CI's type check) installs
        trt = getattr(tensorrt, "__version__", None)
    except ImportError:
        trt = None
    interesting = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                   "asimddp", "i8mm"]
    return {
        "cpu": model, "cpu_flags": [f for f in interesting if f in flags],
        "vnni": bool({"avx512_vnni", "avx_vnni", "asimddp"} & flags),
        "cores": os.cpu_count(), "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}", "python": sys.version.split()[0],
        "onnxruntime": ort.__version__, "onnxruntime_providers": ort.get_available_providers(),
        "opencv": cv2.__version__, "numpy": np.__version__, "tensorrt": trt,
        "gpu": gpu_name(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024
