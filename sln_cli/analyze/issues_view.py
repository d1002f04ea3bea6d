"""The terminal view of `sln analyze issues`: the most suspect rows, and how well the ranking (and cleanlab) finds
the mislabelled samples when the truth is known."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render_issues(result: dict[str, Any], console: Any) -> None:
    """The top rows, how well the ranking finds the mislabelled samples (truth known), cleanlab beside it, files."""
    from rich.table import Table

    table = Table(title=f"sln analyze issues · {result['title']}", caption=(
        f"{result['num_flagged']} of {result['num_samples']} flagged ({result['flagged_by']}); "
        f"score = {result['score_meaning']}"))
    top = result["top"]
    columns = [c for c in ("rank", "index", "path", "given_class", "suggested_class", "score", "p_given",
                           "lc_weight", "true_class", "cleanlab_issue") if c in top[0]]
    for column in columns:
        table.add_column(column.replace("_class", ""), justify="right" if column not in ("path",) else "left")
    for row in top:
        table.add_row(*(_cell(row[column], column) for column in columns),
                      style="red" if row.get("mislabelled") else None)
    console.print(table)
    if "detection" in result:
        console.print(_detection_table(result))
    for what, path in result["files"].items():
        console.print(f"{what}: {path}", markup=False, highlight=False)
    if written := result.get("labels_written"):
        console.print(_written(written), markup=False, highlight=False)


def _cell(value: Any, column: str) -> str:
    if column == "path":
        return Path(value).name
    if isinstance(value, bool):
        return "yes" if value else ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _detection_table(result: dict[str, Any]) -> Any:
    """One row per detector with truth known: ours at r·N and at k, our flagged set, cleanlab, ours at its count."""
    from rich.table import Table

    detection, rate = result["detection"], result["detection"]["noise_rate"]
    table = Table(title=f"Against the true labels: {result['num_mislabelled']} mislabelled "
                        f"(realised rate {result['realized_noise_rate']:.3f})")
    for header in ("detector", "flagged", "precision", "recall", "AUROC"):
        table.add_column(header, justify="left" if header == "detector" else "right")
    table.add_row(f"{result['score']}, top r·N (r = {rate:.3f})", str(detection["flagged_at_rate"]),
                  _number(detection["precision_at_rate"]), _number(detection["recall_at_rate"]),
                  _number(detection["auroc"]))
    table.add_row(f"{result['score']}, top k", str(detection["k"]), _number(detection["precision_at_k"]), "", "")
    flagged = detection["flagged"]
    table.add_row(f"flagged ({result['flagged_by']})", str(flagged["count"]), _number(flagged["precision"]),
                  _number(flagged["recall"]), "")
    if cleanlab := result.get("cleanlab"):
        table.add_row("cleanlab find_label_issues", str(cleanlab["count"]), _number(cleanlab["precision"]),
                      _number(cleanlab["recall"]), "")
        ours = cleanlab["ours_at_same_count"]
        overlap = cleanlab["overlap_with_top_same_count"]
        table.add_row(f"{result['score']}, top {cleanlab['count']} (cleanlab's count; {overlap['both']} shared)",
                      str(ours["count"]), _number(ours["precision"]), _number(ours["recall"]), "")
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _written(written: dict) -> str:
    """One line on the new label file: what changed, and how well when the truth is known."""
    verb = "relabelled" if written["action"] == "relabel" else "dropped"
    line = f"{written['num_changed']} samples {verb} ({written['rule']}) in {written['path']}"
    if written.get("precision") is not None:
        line += (f"; {written['precision']:.1%} of them were truly mislabelled; training noise "
                 f"{written['noise_rate_before']:.1%} -> {written['noise_rate_after']:.1%}")
    return line + f"; retrain with: sln train ... --labels {written['path']}"
