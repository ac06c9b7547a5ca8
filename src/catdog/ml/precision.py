"""Which numeric precision runs the backbone: int8 where it is faster on this CPU, else fp32.

What the machines here showed (VGG16, batch 16, ONNX Runtime CPU, the same test accuracy,
98.52%, in both precisions): on an AMD EPYC with AVX-512 VNNI int8 ran 24.3 images/s against
fp32's 6.1 (4.0x); on one AVX2-only EPYC int8 was no faster (2.39 against 2.42); on another
AVX2-only EPYC, int8 ran 2-3x faster (bench/inference.py: 8.8 against 3.1 graph-only). The
flags alone therefore do not tell, so `auto` decides in two steps:
1. the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX on x86-64,
   asimddp or i8mm on aarch64): int8, known to be several times faster;
2. otherwise both graphs are timed once on this CPU (a few seconds; `measured_int8_speedup`,
   cached per CPU, flags, ONNX Runtime version, backbone and thread count in
   CACHE_DIR/precision.json): int8 when it is at least INT8_MIN_SPEEDUP times faster, else fp32.
The CPU is read at run time, never assumed: the machines that run catdog differ from session
to session.

Pure functions take the flags (and the measurement) as arguments, so tests pass fake ones;
`cpu_flags()` reads them from /proc/cpuinfo on Linux, from sysctl on macOS, and gives an empty
set elsewhere.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from catdog.errors import UsageProblem
from catdog.timefmt import iso_utc

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "int8")
INT8_MIN_SPEEDUP = 1.2  # measured int8/fp32 speed from which auto picks int8 on CPUs without dot products
SPEED_CACHE = "precision.json"
# measured_int8_speedup's timings when it is given no cache folder: entry -> speedup
_SPEEDUPS_THIS_PROCESS: dict[str, float] = {}
# Instructions that multiply-accumulate int8 vectors in one step (what makes QLinearConv fast).
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
# The flags worth printing next to a speed figure (vector width and the int8 instructions).
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
CPUINFO = Path("/proc/cpuinfo")
# macOS sysctl names -> the Linux flag names used above
_MACOS_FLAGS = {
    "hw.optional.arm.FEAT_DotProd": "asimddp",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.avx2_0": "avx2",
    "hw.optional.avx512f": "avx512f",
}


class PrecisionUnavailable(UsageProblem):
    """The requested precision has no graph here, or is not one of auto, fp32, int8."""


def has_int8_dot_product(flags: Iterable[str]) -> bool:
    """Whether CPU flags (Linux /proc/cpuinfo names, any case) include an int8 dot-product instruction."""
    return any(flag.lower() in INT8_DOT_PRODUCT_FLAGS for flag in flags)


def resolve_precision(
    requested: str,
    available: Collection[str],
    flags: Iterable[str] | None = None,
    int8_speedup: Callable[[], float] | None = None,
) -> str:
    """The precision that runs: "fp32" or "int8".

    requested: "auto", "fp32" or "int8". available: the precisions that have a graph (e.g.
    {"fp32", "int8"} for a model directory holding model.onnx and model_int8.onnx). flags: the
    CPU flags (default: this machine's, `cpu_flags()`). int8_speedup: called only when it
    decides, gives int8's speed over fp32's measured on this CPU (see `measured_int8_speedup`).
    "auto" gives int8 when it is available and the CPU has int8 dot products, or when
    int8_speedup() >= INT8_MIN_SPEEDUP; int8 when it is the only graph; else fp32.
    Raises PrecisionUnavailable for an unknown name or an explicit request with no graph.
    """
    if requested not in PRECISIONS:
        raise PrecisionUnavailable(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        if requested not in available:
            raise PrecisionUnavailable(f"no {requested} graph (available: {', '.join(sorted(available)) or 'none'})")
        return requested
    if not available:
        raise PrecisionUnavailable("no graph available in any precision")
    if "int8" not in available:
        return "fp32"
    if "fp32" not in available or has_int8_dot_product(cpu_flags() if flags is None else flags):
        return "int8"
    return "int8" if int8_speedup is not None and int8_speedup() >= INT8_MIN_SPEEDUP else "fp32"


def measured_int8_speedup(
    key: str, fp32_graph: Path, int8_graph: Path, size: int, threads: int = 0, cache_dir: Path | None = None
) -> float:
    """int8's speed over fp32's on this CPU (> 1: int8 is faster), timed once and cached.

    key: what the two graphs are (the backbone's name and its int8 recipe); the cache entry is
    also keyed by the CPU model, its flags, the ONNX Runtime version and `threads`. Both graphs
    take "image" float32 (N, 3, size, size). Timing: 4 images, one warm-up run, then the best
    of two runs of each graph (about 5 s for VGG16 on 2 cores, once per machine).
    cache_dir: the folder of CACHE_DIR/precision.json (settings.cache_dir); None keeps the timing
    in this process only (timed once per process).
    """
    import onnxruntime as ort

    entry = "|".join(
        [cpu_model(), ",".join(sorted(cpu_flags())), f"onnxruntime {ort.__version__}", key, f"threads {threads}"]
    )
    if cache_dir is None:
        if entry not in _SPEEDUPS_THIS_PROCESS:
            log.info("timing int8 against fp32 once in this process (%s; no cache folder given)", key)
            _SPEEDUPS_THIS_PROCESS[entry] = _measure_speedup(fp32_graph, int8_graph, size, threads)[0]
        return _SPEEDUPS_THIS_PROCESS[entry]
    cache = Path(cache_dir) / SPEED_CACHE
    known = _read_json(cache)
    if isinstance(known.get(entry), dict) and "int8_speedup" in known[entry]:
        return float(known[entry]["int8_speedup"])
    log.info("timing int8 against fp32 once on this CPU (%s)", key)
    speedup, seconds = _measure_speedup(fp32_graph, int8_graph, size, threads)
    known[entry] = {
        "int8_speedup": round(speedup, 3),
        "seconds": seconds,
        "measured": iso_utc(),
    }
    try:
        _write_json(cache, known)
    except OSError as exc:  # a read-only cache (a container's image layer): time again next start
        log.warning("cannot keep the int8 timing in %s: %s", cache, exc.strerror or exc)
    log.info("int8 runs %.2fx fp32 here (%s)", speedup, key)
    return speedup


def _measure_speedup(fp32_graph: Path, int8_graph: Path, size: int, threads: int) -> tuple[float, dict[str, float]]:
    """(fp32 seconds / int8 seconds, {"fp32": s, "int8": s}): the best run of each graph."""
    seconds = {
        name: _best_run_seconds(graph, size, threads) for name, graph in (("fp32", fp32_graph), ("int8", int8_graph))
    }
    return seconds["fp32"] / seconds["int8"], seconds


def _best_run_seconds(graph: Path, size: int, threads: int, images: int = 4, runs: int = 2) -> float:
    import numpy as np

    from catdog.ml.onnx_runtime import make_session

    session = make_session(graph, threads)
    batch = np.random.default_rng(0).normal(0, 50, (images, 3, size, size)).astype(np.float32)
    session.run(None, {"image": batch})  # warm-up: allocations, kernel choice
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {"image": batch})
        best = min(best, time.perf_counter() - started)
    return best


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags in Linux /proc/cpuinfo spelling (lower case); empty when unknown."""
    try:
        return parse_cpuinfo(CPUINFO.read_text(errors="replace"))[1]
    except OSError:
        pass
    if platform.system() == "Darwin":
        return frozenset(flag for name, flag in _MACOS_FLAGS.items() if _sysctl(name) == "1")
    return frozenset()


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo text: x86 "flags", aarch64 "Features" lines."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.lower().split())
        if model and flags:
            break
    return model, flags


def _sysctl(name: str) -> str:
    try:
        result = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


@functools.cache
def cpu_model() -> str:
    """The CPU's model name ("unknown" when the system does not say)."""
    try:
        model = parse_cpuinfo(CPUINFO.read_text(errors="replace"))[0]
    except OSError:
        model = _sysctl("machdep.cpu.brand_string") if platform.system() == "Darwin" else ""
    return model or platform.processor() or "unknown"


def cpu_description() -> dict[str, Any]:
    """What benches, logs and /api/status print about the CPU, JSON-ready.

    {"model": str, "architecture": str (e.g. "x86_64"), "logical_cores": int,
     "flags": sorted list of the RELEVANT_FLAGS present, "int8_dot_product": bool,
     "auto_precision": how "auto" chooses where both graphs exist (int8, or a measurement)}.
    """
    flags = cpu_flags()
    fast_int8 = has_int8_dot_product(flags)
    return {
        "model": cpu_model(),
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count() or 1,
        "flags": [flag for flag in RELEVANT_FLAGS if flag in flags],
        "int8_dot_product": fast_int8,
        "auto_precision": "int8" if fast_int8 else f"int8 if timed >= {INT8_MIN_SPEEDUP}x fp32 on this CPU, else fp32",
    }


def describe_cpu_line() -> str:
    """One line for logs and bench output, e.g. "AMD EPYC, x86_64, 2 cores, flags avx2; int8 dot products: no"."""
    cpu = cpu_description()
    flags = ", ".join(cpu["flags"]) or "none of " + "/".join(RELEVANT_FLAGS)
    yes_no = "yes" if cpu["int8_dot_product"] else "no"
    machine = f"{cpu['model']}, {cpu['architecture']}, {cpu['logical_cores']} cores"
    return f"{machine}, flags {flags}; int8 dot products: {yes_no}"
