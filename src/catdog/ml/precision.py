"""Which numeric precision runs the backbone: int8 where the CPU has int8 dot products, else fp32.

Measured on this project's machines (VGG16, batch 16, ONNX Runtime CPU): on an AMD EPYC with
AVX-512 VNNI int8 ran 24.3 images/s against fp32's 6.1 (4.0x) at the same test accuracy
(98.52%); on an AVX2-only EPYC int8 was no faster (2.39 against 2.42 images/s). So `auto` picks
int8 exactly where the CPU has int8 dot-product instructions: AVX-512 VNNI, AVX-VNNI or AMX on
x86-64, the dot-product extensions (asimddp, i8mm) on aarch64. The CPU is read at run time,
never assumed: the machines that run catdog differ from session to session.

Pure functions take the flags as an argument (tests pass fake sets); `cpu_flags()` reads them
from /proc/cpuinfo on Linux, from sysctl on macOS, and gives an empty set elsewhere (fp32).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from catdog.errors import UsageProblem

PRECISIONS = ("auto", "fp32", "int8")
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


def resolve_precision(requested: str, available: Collection[str], flags: Iterable[str] | None = None) -> str:
    """The precision that runs: "fp32" or "int8".

    requested: "auto", "fp32" or "int8". available: the precisions that have a graph (e.g.
    {"fp32", "int8"} for a model directory holding model.onnx and model_int8.onnx). flags: the
    CPU flags (default: this machine's, `cpu_flags()`). "auto" gives int8 when it is available
    and the CPU has int8 dot products, else fp32 (int8 when it is the only graph).
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
    fast_int8 = has_int8_dot_product(cpu_flags() if flags is None else flags)
    if "int8" in available and (fast_int8 or "fp32" not in available):
        return "int8"
    return "fp32"


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
     "auto_precision": "int8" or "fp32" (what "auto" picks where both graphs exist)}.
    """
    flags = cpu_flags()
    fast_int8 = has_int8_dot_product(flags)
    return {
        "model": cpu_model(),
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count() or 1,
        "flags": [flag for flag in RELEVANT_FLAGS if flag in flags],
        "int8_dot_product": fast_int8,
        "auto_precision": "int8" if fast_int8 else "fp32",
    }


def describe_cpu_line() -> str:
    """One line for logs and bench output, e.g. "AMD EPYC, x86_64, 2 cores, flags avx2; int8 dot products: no"."""
    cpu = cpu_description()
    flags = ", ".join(cpu["flags"]) or "none of " + "/".join(RELEVANT_FLAGS)
    yes_no = "yes" if cpu["int8_dot_product"] else "no"
    machine = f"{cpu['model']}, {cpu['architecture']}, {cpu['logical_cores']} cores"
    return f"{machine}, flags {flags}; int8 dot products: {yes_no}"
