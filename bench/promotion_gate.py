"""The promotion gate against erosion: chains of retrains, each a little worse than production.

Simulates retrain chains on paired test predictions (no model runs: the gate only reads numbers)
and sends every candidate through the promotion gate (catdog.jobs.gate.decide), twice:
- "production only": the gate before issue 20 (accuracy within the tolerance of production);
- "issue 20": production's accuracy check + McNemar's exact test + the reference (the first
  production) + the floor.
Each candidate fixes FIX of production's mistakes and makes FIX + d new ones, d uniform in
1..MAX_LOSS (each step 1..MAX_LOSS images worse: inside the tolerance for the defaults, and rarely
significant by McNemar). Starts from the shipped model's test figures (models/vgg16/metrics.json:
N test images and its accuracy) unless --n/--accuracy say otherwise. Prints, per gate, the end
accuracy (worst and median over the seeds), its lowest point, the promotions, and which check
refused the most candidates; a check that the issue-20 gate never ends below reference - tolerance.

    .venv/bin/python bench/promotion_gate.py [--steps 50] [--seeds 200] [--tolerance 0.005]
        [--fix 30] [--max-loss 4] [--n N] [--accuracy A]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from catdog.jobs.gate import Contender, decide

ROOT = Path(__file__).resolve().parents[1]


def chain(
    rng: np.random.Generator, args: argparse.Namespace, old_gate: bool
) -> tuple[list[float], float, int, Counter[str]]:
    """(production's accuracy after each step, the reference's, promotions, refusals by check)."""
    labels = rng.integers(0, 2, args.n)
    production = labels.copy()
    wrong = rng.choice(args.n, round(args.n * (1 - args.accuracy)), replace=False)
    production[wrong] = 1 - production[wrong]
    reference = Contender(1, float(np.mean(production == labels)), production.copy(), "same features")
    version, promotions, trail, refused = 1, 0, [], Counter[str]()
    for _ in range(args.steps):
        mistakes = np.flatnonzero(production != labels)
        right = np.flatnonzero(production == labels)
        fixed = rng.choice(mistakes, min(args.fix, len(mistakes)), replace=False)
        broken = rng.choice(right, len(fixed) + int(rng.integers(1, args.max_loss + 1)), replace=False)
        candidate = production.copy()
        candidate[fixed] = labels[fixed]
        candidate[broken] = 1 - labels[broken]
        current = Contender(version, float(np.mean(production == labels)), production, "same features")
        decision = decide(
            Contender(None, float(np.mean(candidate == labels)), candidate, "same features"),
            current,
            current if old_gate else reference,
            None if old_gate else labels,
            tolerance=args.tolerance,
            alpha=args.alpha,
            min_accuracy=0.0 if old_gate else args.floor,
        )
        if decision.promoted:
            version, promotions, production = version + 1, promotions + 1, candidate
        else:
            refused.update(check.name for check in decision.checks if not check.passed)
        trail.append(float(np.mean(production == labels)))
    assert reference.accuracy is not None
    return trail, reference.accuracy, promotions, refused


def main() -> int:
    shipped = ROOT / "models" / "vgg16" / "metrics.json"
    figures = json.loads(shipped.read_text()) if shipped.is_file() else {"n": 1623, "accuracy": 0.9834}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="retrains in each chain")
    parser.add_argument("--seeds", type=int, default=200, help="chains per gate")
    parser.add_argument("--tolerance", type=float, default=0.005, help="CATDOG_GATE_TOLERANCE")
    parser.add_argument("--alpha", type=float, default=0.05, help="CATDOG_GATE_MCNEMAR_ALPHA")
    parser.add_argument("--floor", type=float, default=0.90, help="CATDOG_GATE_MIN_ACCURACY")
    parser.add_argument("--fix", type=int, default=30, help="production mistakes each candidate fixes")
    parser.add_argument("--max-loss", type=int, default=4, help="at most this many more new mistakes than fixed")
    parser.add_argument("--n", type=int, default=int(figures["n"]), help="test images")
    parser.add_argument("--accuracy", type=float, default=float(figures["accuracy"]), help="the first production's")
    args = parser.parse_args()
    print(
        f"{args.seeds} chains of {args.steps} retrains on {args.n} test images from accuracy {args.accuracy:.4f}; "
        f"each candidate fixes up to {args.fix} mistakes and makes 1..{args.max_loss} more new ones; "
        f"tolerance {args.tolerance}, McNemar alpha {args.alpha}, floor {args.floor}"
    )
    for name, old_gate in (("production only", True), ("issue 20", False)):
        ends, lows, promotions, refused = [], [], [], Counter[str]()
        reference = 0.0
        for seed in range(args.seeds):
            trail, reference, promoted, why = chain(np.random.default_rng(seed), args, old_gate)
            ends.append(trail[-1])
            lows.append(min(trail))
            promotions.append(promoted)
            refused += why
        print(
            f"{name:>16}: end accuracy worst {min(ends):.4f}, median {np.median(ends):.4f}; lowest ever "
            f"{min(lows):.4f} (reference {reference:.4f}, bound {reference - args.tolerance:.4f}); promotions "
            f"median {int(np.median(promotions))}; refusals by check {dict(refused) or '{}'}"
        )
        if not old_gate and min(lows) < reference - args.tolerance - 1e-9:
            print("FAILED: the gate let production fall below reference - tolerance")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
