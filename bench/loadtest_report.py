"""One Markdown table row from one Locust run of locustfile.py (what `make loadtest` prints at the end).

    .venv/bin/python bench/loadtest_report.py reports/loadtest/u100-r10-20260101-120000
    .venv/bin/python bench/loadtest_report.py PREFIX --summary other.json --row-only

PREFIX is the run's `--csv` prefix: it reads PREFIX_stats.csv (Locust's figures: average, median,
p95, p99 and requests/s, for all requests and for POST /api/predict alone, failure rate) and
the locustfile's JSON summary (PREFIX.json unless --summary names another: users, spawn rate,
duration, target, sheds, hard failures, cache hit rate). Locust rewrites its CSV once a second
during the run and not at the end, so the CSV can miss the last second's requests: the summary
carries Locust's final figures, and they win when present. Locust rounds response times above
100 ms to two significant figures in its percentiles; the averages are exact. The last column is
the CPU of the machine running this script (the load generator; the server's when both run on
one machine, as `make loadtest` does against a local server).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from catdog.ml.precision import describe_cpu_line

PREDICT = "/api/predict"
HEADER = (
    "| users | spawn rate | duration | target | average ms | median ms | p95 ms | p99 ms | requests/s "
    "| failure rate | shed rate | hard failures | cache hit rate | CPU |"
)
NOTE = "(ms: all requests / predictions alone)"


def read_stats(path: Path) -> dict[str, dict[str, str]]:
    """Locust's `_stats.csv` rows by name ("Aggregated" for all requests together)."""
    with path.open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def read_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


CSV_COLUMNS = {
    "requests": "Request Count",
    "failures": "Failure Count",
    "average_ms": "Average Response Time",
    "median_ms": "Median Response Time",
    "p95_ms": "95%",
    "p99_ms": "99%",
    "requests_per_s": "Requests/s",
}
Figures = dict[str, float | None]


def csv_figures(row: dict[str, str]) -> Figures:
    figures: Figures = {}
    for key, column in CSV_COLUMNS.items():
        try:
            figures[key] = float(row.get(column, ""))
        except ValueError:  # "N/A" when there were no requests
            figures[key] = None
    return figures


def run_figures(stats: dict[str, dict[str, str]], summary: dict[str, Any], name: str) -> Figures | None:
    """Locust's figures for one name: its final ones from the summary when there, else its CSV's last write."""
    final = (summary.get("locust_stats") or {}).get(name)
    if isinstance(final, dict):
        return {key: None if final.get(key) is None else float(final[key]) for key in CSV_COLUMNS}
    row = stats.get(name)
    return None if row is None else csv_figures(row)


def ms_text(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def pair(everything: Figures | None, predict: Figures | None, key: str) -> str:
    def text(figures: Figures | None) -> str:
        return ms_text(figures.get(key) if figures else None)

    return f"{text(everything)} / {text(predict)}"


def percent(value: Any) -> str:
    return f"{float(value):.2%}" if isinstance(value, int | float) else "-"


def duration_text(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def report_row(stats: dict[str, dict[str, str]], summary: dict[str, Any], cpu: str) -> str:
    everything = run_figures(stats, summary, "Aggregated")
    predict = run_figures(stats, summary, PREDICT)
    requests = (everything or {}).get("requests") or 0.0
    failures = (everything or {}).get("failures") or 0.0
    requests_per_s = (everything or {}).get("requests_per_s")
    users = summary.get("peak_users") or summary.get("users")
    if summary.get("shape") == "step" and summary.get("steps"):
        users = f"{summary['steps'][0]['users']}..{summary['steps'][-1]['users']} (steps)"
    cells = [
        str(users if users is not None else "-"),
        str(summary.get("spawn_rate") if summary.get("spawn_rate") is not None else "-"),
        duration_text(summary.get("duration_s")),
        str(summary.get("host") or "-"),
        pair(everything, predict, "average_ms"),
        pair(everything, predict, "median_ms"),
        pair(everything, predict, "p95_ms"),
        pair(everything, predict, "p99_ms"),
        "-" if requests_per_s is None else f"{requests_per_s:.2f}",
        percent(failures / requests) if requests else "-",
        percent(summary.get("shed_rate")),
        str(summary.get("hard_failures", "-")),
        percent(summary.get("cache_hit_rate")),
        cpu,
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefix", help="the run's --csv prefix, e.g. reports/loadtest/u100-r10-20260101-120000")
    parser.add_argument("--summary", type=Path, help="the locustfile's JSON summary (default: PREFIX.json)")
    parser.add_argument("--row-only", action="store_true", help="print the row without the header")
    args = parser.parse_args(argv)
    stats_path = Path(f"{args.prefix}_stats.csv")
    if not stats_path.is_file():
        print(f"loadtest_report: no {stats_path} (was Locust run with --csv {args.prefix}?)", file=sys.stderr)
        return 1
    summary_path = args.summary or Path(f"{args.prefix}.json")
    summary = read_summary(summary_path)
    if not summary:
        print(f"loadtest_report: no summary at {summary_path}: sheds, hard failures, cache read '-'", file=sys.stderr)
    row = report_row(read_stats(stats_path), summary, describe_cpu_line())
    if not args.row_only:
        print(NOTE)
        print(HEADER)
        print("|" + "---|" * HEADER.count(" | ") + "---|")
    print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
