"""Choosing fp32 or int8 from CPU flags: pure functions, fed fake flag sets (never this machine's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catdog.ml import precision
from catdog.ml.precision import (
    RELEVANT_FLAGS,
    PrecisionUnavailable,
    cpu_description,
    cpu_flags,
    has_int8_dot_product,
    measured_int8_speedup,
    parse_cpuinfo,
    resolve_precision,
)

AVX2_ONLY = {"sse4_2", "avx", "avx2", "fma", "f16c"}
VNNI_512 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_vnni"}
AVX_VNNI = AVX2_ONLY | {"avx_vnni"}
AMX = VNNI_512 | {"amx_tile", "amx_int8", "amx_bf16"}
ARM_DOTPROD = {"fp", "asimd", "asimddp"}
ARM_PLAIN = {"fp", "asimd", "crc32"}
BOTH = {"fp32", "int8"}

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512_vnni
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("flags", [VNNI_512, AVX_VNNI, AMX, ARM_DOTPROD, {"I8MM"}])
def test_int8_dot_product_instructions_are_recognised(flags: set[str]) -> None:
    assert has_int8_dot_product(flags)


@pytest.mark.parametrize("flags", [AVX2_ONLY, AVX2_ONLY | {"avx512f", "avx512bw"}, ARM_PLAIN, set()])
def test_cpus_without_int8_dot_products_are_recognised(flags: set[str]) -> None:
    assert not has_int8_dot_product(flags)


@pytest.mark.parametrize(
    ("requested", "available", "flags", "expected"),
    [
        ("auto", BOTH, VNNI_512, "int8"),
        ("auto", BOTH, AVX_VNNI, "int8"),
        ("auto", BOTH, ARM_DOTPROD, "int8"),
        ("auto", BOTH, AVX2_ONLY, "fp32"),  # no dot products and no measurement: fp32
        ("auto", BOTH, set(), "fp32"),  # unknown CPU: the safe choice
        ("auto", {"fp32"}, VNNI_512, "fp32"),  # no int8 graph: fp32, quietly
        ("auto", {"int8"}, AVX2_ONLY, "int8"),  # the only graph there is
        ("fp32", BOTH, VNNI_512, "fp32"),
        ("int8", BOTH, AVX2_ONLY, "int8"),  # an explicit request wins over the CPU
    ],
)
def test_resolve_precision(requested: str, available: set[str], flags: set[str], expected: str) -> None:
    assert resolve_precision(requested, available, flags) == expected


@pytest.mark.parametrize(("requested", "available"), [("int8", {"fp32"}), ("fp32", {"int8"}), ("fp16", BOTH)])
def test_impossible_requests_are_refused(requested: str, available: set[str]) -> None:
    with pytest.raises(PrecisionUnavailable, match=requested):
        resolve_precision(requested, available, VNNI_512)


def test_auto_with_no_graph_at_all_is_refused() -> None:
    with pytest.raises(PrecisionUnavailable):
        resolve_precision("auto", set(), VNNI_512)


def test_cpuinfo_is_parsed_on_x86_and_aarch64() -> None:
    model, flags = parse_cpuinfo(X86_CPUINFO)
    assert model == "AMD EPYC 9B14"
    assert {"avx2", "avx512_vnni"} <= flags and has_int8_dot_product(flags)
    model, flags = parse_cpuinfo(ARM_CPUINFO)
    assert "asimddp" in flags and has_int8_dot_product(flags)


def test_this_cpu_is_described_consistently() -> None:
    """Whatever this machine is: the description agrees with its own flags and is JSON-ready."""
    cpu = cpu_description()
    assert set(cpu) == {"model", "architecture", "logical_cores", "flags", "int8_dot_product", "auto_precision"}
    assert set(cpu["flags"]) <= set(RELEVANT_FLAGS)
    assert set(cpu["flags"]) == set(RELEVANT_FLAGS) & cpu_flags()
    assert cpu["int8_dot_product"] == has_int8_dot_product(cpu_flags())
    assert (cpu["auto_precision"] == "int8") == has_int8_dot_product(cpu_flags())
    json.dumps(cpu)


def test_without_cpuinfo_or_sysctl_the_flags_are_empty(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "no-cpuinfo")
    monkeypatch.setattr(precision.platform, "system", lambda: "Windows")
    precision.cpu_flags.cache_clear()
    try:
        assert cpu_flags() == frozenset()
        assert resolve_precision("auto", BOTH) == "fp32"
    finally:
        precision.cpu_flags.cache_clear()


@pytest.mark.parametrize(("speedup", "expected"), [(2.9, "int8"), (1.25, "int8"), (1.1, "fp32"), (0.8, "fp32")])
def test_without_dot_products_auto_follows_the_measured_speed(speedup: float, expected: str) -> None:
    asked: list[bool] = []

    def measure() -> float:
        asked.append(True)
        return speedup

    assert resolve_precision("auto", BOTH, AVX2_ONLY, int8_speedup=measure) == expected
    assert asked == [True]
    assert resolve_precision("auto", BOTH, VNNI_512, int8_speedup=measure) == "int8" and asked == [True]
    assert resolve_precision("fp32", BOTH, AVX2_ONLY, int8_speedup=measure) == "fp32" and asked == [True]


def test_the_measurement_runs_once_per_cpu_and_is_cached(
    lite0_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = lite0_model / "model.onnx"  # the same graph twice: int8 "as fast as" fp32
    speedup = measured_int8_speedup("test-backbone", graph, graph, size=224, threads=1, cache_dir=tmp_path)
    assert 0.5 < speedup < 2.0
    cached = json.loads((tmp_path / "precision.json").read_text())
    (entry,) = cached.values()
    assert entry["int8_speedup"] == round(speedup, 3) and set(entry["seconds"]) == {"fp32", "int8"}

    def no_timing(*args: object, **kwargs: object) -> float:
        raise AssertionError("timed again")

    monkeypatch.setattr(precision, "_best_run_seconds", no_timing)
    again = measured_int8_speedup("test-backbone", graph, graph, size=224, threads=1, cache_dir=tmp_path)
    assert again == round(speedup, 3)


def test_a_cache_folder_that_cannot_be_written_costs_a_timing_not_a_crash(
    lite0_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only image layer (a container's CATDOG_CACHE_DIR): timed, used, and a warning that it is not kept."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    graph = lite0_model / "model.onnx"
    with caplog.at_level("WARNING", logger="catdog.ml.precision"):
        speedup = measured_int8_speedup("test-backbone", graph, graph, size=224, threads=1, cache_dir=blocked / "cache")
    assert 0.5 < speedup < 2.0
    assert "cannot keep the int8 timing" in caplog.text
