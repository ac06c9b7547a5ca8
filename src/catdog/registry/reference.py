"""The promotion gate's reference version: which one it is, and the rule for moving it (no MLflow import here).

The gate (catdog.jobs.gate) holds every new version within the tolerance of a reference version,
so a chain of retrains cannot erode accuracy step by step. Which version that is, first match wins:

1. the setting CATDOG_GATE_REFERENCE (source "setting"): it wins over everything below;
2. the registered model's tag `catdog.gate_reference` (JSON {"version", "set_by", "set_at"}),
   written at the first promotion ever (set_by "first production": on a fresh registry, the
   shipped default at bootstrap) and moved by an admin (`POST /api/models/{version}/reference`,
   `catdog models reference N`; set_by "admin (API)" / "admin (CLI)");
3. the oldest entry of the production history (registries from before the tag: "first production");
4. the current production ("production").

A registered-model tag rather than an alias keeps `aliases()` what servers poll (production and
staging). An admin may move the reference only to a version at least as accurate (registered test
accuracy) as the current one: lowering the bar is what the gate exists to prevent; the setting
remains the way to pin any version deliberately.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from catdog.errors import UsageProblem

REFERENCE_TAG = "catdog.gate_reference"  # registered-model tag: JSON {"version", "set_by", "set_at"}


class ReferenceNotBetter(UsageProblem):
    """The proposed reference is less accurate than the current one (the API answers 409, the CLI exits 2)."""

    status_code = 409


@dataclass(frozen=True)
class GateReference:
    """The reference version and how it was chosen.

    version: registry version number (None: no production ever, so no reference); source:
    "setting", "first production", "admin (API)", "admin (CLI)" or "production"; set_at: ISO 8601
    UTC when the tag was written ("" otherwise).
    """

    version: int | None
    source: str
    set_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "source": self.source, "set_at": self.set_at or None}


def resolve(setting: int | None, tags: dict[str, str], history: list[int], production: int | None) -> GateReference:
    """The reference (see the module docstring for the order) from the setting and the registered model's tags.

    setting: CATDOG_GATE_REFERENCE (None: unset); tags: the registered model's tags; history: the
    production history, oldest first; production: the current production version or None.
    """
    if setting is not None:
        return GateReference(int(setting), "setting")
    stored = stored_reference(tags)
    if stored is not None:
        return stored
    if history:
        return GateReference(int(history[0]), "first production")
    return GateReference(production, "production")


def stored_reference(tags: dict[str, str]) -> GateReference | None:
    """The reference recorded in the registered model's tag, None when absent or unreadable."""
    try:
        data = json.loads(tags[REFERENCE_TAG])
        return GateReference(int(data["version"]), str(data.get("set_by") or "admin"), str(data.get("set_at") or ""))
    except (KeyError, ValueError, TypeError):
        return None


def encode(version: int, set_by: str, set_at: str) -> str:
    """The tag's value for `version`."""
    return json.dumps({"version": int(version), "set_by": set_by, "set_at": set_at})


def check_better(version: int, accuracy: float | None, current: int | None, current_accuracy: float | None) -> None:
    """Raise ReferenceNotBetter unless `version` (test accuracy `accuracy`) is at least as accurate as `current`.

    accuracy, current_accuracy: registered test accuracies (fractions) or None. A version without
    a test accuracy is refused; a current reference without one may be replaced by any that has one.
    """
    if accuracy is None:
        raise ReferenceNotBetter(f"version {version} has no test accuracy: it cannot be the gate's reference")
    if current is None or current == version or current_accuracy is None:
        return
    if accuracy < current_accuracy:
        raise ReferenceNotBetter(
            f"version {version}'s test accuracy {accuracy:.4f} is below the current reference's (version {current}: "
            f"{current_accuracy:.4f}); the reference only moves up (CATDOG_GATE_REFERENCE pins any version)"
        )
