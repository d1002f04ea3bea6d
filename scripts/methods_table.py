"""Markdown table from `sln evaluate --json`: one line per method, mean ± std (ddof=1) over its seeds of the
raw and the EMA network's test accuracy, in the order the runs were given."""

import json
import statistics
import sys


def main(path: str) -> None:
    runs: dict[str, dict[str, dict]] = {}
    for row in json.load(open(path, encoding="utf-8")):
        if not row.get("aggregate"):
            runs.setdefault(row["run"], {})[row["weights"]] = row
    methods: dict[str, list[dict[str, dict]]] = {}
    for pair in runs.values():
        methods.setdefault(pair["raw"]["method"], []).append(pair)
    print("| method | raw test accuracy | EMA test accuracy | seeds |")
    print("| --- | --- | --- | --- |")
    for name, pairs in methods.items():
        seeds = ", ".join(str(pair["raw"]["seed"]) for pair in pairs)
        ema_name = pairs[0]["ema"]["method"]
        print(f"| {name} | {_cell(pairs, 'raw')} | {_cell(pairs, 'ema')} ({ema_name}) | {seeds} |")


def _cell(pairs: list[dict[str, dict]], weights: str) -> str:
    values = [100 * pair[weights]["accuracy"] for pair in pairs]
    if len(values) == 1:
        return f"{values[0]:.1f}%"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}%"


if __name__ == "__main__":
    main(sys.argv[1])
