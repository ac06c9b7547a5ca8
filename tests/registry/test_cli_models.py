"""`catdog models list|promote|rollback` on a state folder of its own (the `settings` fixture sets CATDOG_*)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from catdog.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_registers_the_shipped_models_first_and_prints_a_table(settings: Any, capsys: Any) -> None:
    code, out, err = run(capsys, "list")

    assert code == 0
    assert "registered shipped model vgg16-" in err
    header, *rows = out.splitlines()
    assert header.split() == ["version", "model_version", "backbone", "aliases", "accuracy", "source", "created"]
    assert [row.split()[:5] for row in rows] == [
        ["2", rows[0].split()[1], "efficientnet_lite0", "-", "0.9700"],
        ["1", rows[1].split()[1], "vgg16", "production", "0.9850"],
    ]
    assert rows[1].split()[1].startswith("vgg16-")

    code, out, err = run(capsys, "list", "--json")
    assert code == 0
    assert err == ""  # registered once only
    listing = json.loads(out)
    assert listing["aliases"] == {"production": 1}
    assert [v["version"] for v in listing["versions"]] == [2, 1]
    assert listing["versions"][1]["aliases"] == ["production"]
    assert listing["versions"][1]["metrics"]["accuracy"] == pytest.approx(0.985)


def test_promote_and_rollback_print_one_line(settings: Any, capsys: Any) -> None:
    assert run(capsys, "promote", "2")[:2] == (0, "production -> version 2 (was version 1)\n")
    assert run(capsys, "rollback")[:2] == (0, "production -> version 1 (rolled back from version 2)\n")

    code, out, err = run(capsys, "rollback")
    assert (code, out) == (2, "")
    assert err.startswith("catdog: error: nothing to roll back") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "9"], "catdog: error: no model version 9"),
        (["promote", "two"], "catdog: error: models promote: argument VERSION: must be a whole number"),
        (["promote"], "catdog: error: models promote: the following arguments are required: VERSION"),
        ([], "catdog: error: models: the following arguments are required: action"),
    ],
)
def test_bad_usage_exits_2_with_one_line(settings: Any, capsys: Any, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith(message), err
    assert err.count("\n") == 1
