"""The promotion gate's reference version in the registry: the first production, the setting, moved only upwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from catdog.cli import main
from catdog.jobs.gate import Contender, decide
from catdog.registry import GateReference, ReferenceNotBetter, Registry, UnknownVersion
from catdog.registry.reference import REFERENCE_TAG, resolve

from .test_registry import log_run


def test_resolve_order_setting_then_tag_then_history_then_production() -> None:
    tag = {REFERENCE_TAG: json.dumps({"version": 4, "set_by": "admin (API)", "set_at": "2025-01-01T00:00:00Z"})}
    assert resolve(7, tag, [1, 4], 4) == GateReference(7, "setting")
    assert resolve(None, tag, [1, 4], 4) == GateReference(4, "admin (API)", "2025-01-01T00:00:00Z")
    assert resolve(None, {REFERENCE_TAG: "not json"}, [2, 3], 3) == GateReference(2, "first production")
    assert resolve(None, {}, [], 3) == GateReference(3, "production")
    assert resolve(None, {}, [], None).version is None


def test_the_first_production_is_the_reference_and_stays_so(registry: Registry) -> None:
    registry.bootstrap()  # vgg16 (0.985) is version 1 and production; efficientnet_lite0 (0.97) version 2
    assert registry.aliases() == {"production": 1}  # a tag, not an alias: servers' aliases are unchanged
    first = registry.reference()
    assert (first.version, first.source) == (1, "first production") and first.set_at.endswith("Z")
    registry.promote(2)
    registry.rollback()
    registry.promote(2)
    assert registry.reference() == first


def test_the_setting_wins(settings: Any) -> None:
    registry = Registry(settings.model_copy(update={"gate_reference": 2}))
    registry.bootstrap()
    assert registry.reference() == GateReference(2, "setting")


def test_a_registry_from_before_the_tag_falls_back_to_its_first_production(registry: Registry) -> None:
    registry.bootstrap()
    registry.promote(2)
    registry.client.delete_registered_model_tag(registry.name, REFERENCE_TAG)
    assert registry.reference() == GateReference(1, "first production")


def test_an_admin_moves_the_reference_only_upwards(registry: Registry, trained: Callable[..., Path]) -> None:
    registry.bootstrap()  # 1 vgg16 0.985 (production), 2 lite0 0.97
    with pytest.raises(ReferenceNotBetter, match="version 2 is efficientnet_lite0, production is vgg16"):
        registry.set_reference(2, set_by="admin (API)")  # another backbone: never, whatever its accuracy
    worse = log_run(registry, trained(accuracy=0.97), test_metrics={"accuracy": 0.97, "n": 40})
    with pytest.raises(ReferenceNotBetter, match=r"0\.9700 is below the current reference's \(version 1: 0\.9850\)"):
        registry.set_reference(worse.version, set_by="admin (API)")
    with pytest.raises(UnknownVersion):
        registry.set_reference(9, set_by="admin (API)")
    better = log_run(registry, trained(accuracy=0.99), test_metrics={"accuracy": 0.99, "n": 40})
    assert registry.set_reference(better.version, set_by="admin (API)") == (better.version, 1)
    moved = registry.reference()
    assert (moved.version, moved.source) == (better.version, "admin (API)")
    assert registry.set_reference(better.version, set_by="admin (CLI)") == (better.version, better.version)
    no_figure = log_run(registry, trained(accuracy=0.99), test_metrics={"n": 40})
    with pytest.raises(ReferenceNotBetter, match="no test accuracy"):
        registry.set_reference(no_figure.version, set_by="admin (API)")


def test_a_chain_through_the_registry_never_ends_below_reference_minus_tolerance(
    registry: Registry, trained: Callable[..., Path]
) -> None:
    """Retrains each 0.2 points below production (inside the 0.5 point tolerance) through the registry and the gate."""
    tolerance = 0.005
    registry.bootstrap()
    reference = registry.reference()
    assert reference.version is not None
    reference_accuracy = float(registry.get(reference.version).metrics["accuracy"] or 0)
    assert reference_accuracy == pytest.approx(0.985)
    verdicts = []
    for _ in range(5):
        production = registry.get(registry.aliases()["production"])
        accuracy = float(production.metrics["accuracy"] or 0) - 0.002
        version = log_run(
            registry, trained(accuracy=accuracy), test_metrics={"accuracy": accuracy, "n": 2000}, parent_version=1
        )

        def registered(info: Any) -> Contender:
            return Contender(info.version, info.metrics["accuracy"], None, "its registered test metrics")

        decision = decide(
            Contender(version.version, accuracy),
            registered(production),
            registered(registry.get(registry.reference().version or 0)),
            None,
            tolerance=tolerance,
            alpha=0.05,
            min_accuracy=0.9,
            reference_source=registry.reference().source,
        )
        registry.set_tags(version.version, {"gate_checks": json.dumps(decision.checks_list())})
        if decision.promoted:
            registry.promote(version.version, reason=decision.reason)
        verdicts.append(decision.promoted)
        now = registry.get(registry.aliases()["production"]).metrics["accuracy"]
        assert now is not None and now >= reference_accuracy - tolerance - 1e-9
    assert verdicts == [True, True, False, False, False]  # 0.983, 0.981 promoted; 0.979 is below 0.985 - 0.005
    refused = registry.get(registry.versions()[0].version).to_dict()["gate"]["checks"]
    assert [c["name"] for c in refused if not c["passed"]] == ["reference"]
    assert refused[2]["reference_version"] == 1 and refused[2]["source"] == "first production"


def test_cli_moves_the_reference(
    settings: Any, capsys: pytest.CaptureFixture[str], trained: Callable[..., Path]
) -> None:
    assert main(["models", "list"]) == 0  # bootstrap
    capsys.readouterr()
    assert main(["models", "reference", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("catdog: error: version 2 is efficientnet_lite0") and err.count("\n") == 1
    better = log_run(Registry(settings), trained(accuracy=0.99), test_metrics={"accuracy": 0.99, "n": 40})
    assert main(["models", "reference", str(better.version)]) == 0
    assert capsys.readouterr().out == f"gate reference -> version {better.version} (was version 1)\n"
    assert main(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["reference"]["version"] == better.version and listing["reference"]["source"] == "admin (CLI)"
