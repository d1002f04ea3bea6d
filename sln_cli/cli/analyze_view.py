"""The terminal views of `sln analyze`: confidence (clean vs mislabelled), issues (the most suspect rows, and how
well the ranking and cleanlab find the mislabelled samples when the truth is known), landscape (sharpness per run),
noise (the estimated noise rate against the truth)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # sln_cli/cli/ imports no torch at run time
    from sln_cli.analyze.noise_rate import NoiseResult
    from sln_cli.analyze.workflow import ConfidenceResult, LandscapeResult


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


def _short_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _written(written: dict) -> str:
    """One line on the new label file: what changed, and how well when the truth is known."""
    verb = "relabelled" if written["action"] == "relabel" else "dropped"
    line = f"{written['num_changed']} samples {verb} ({written['rule']}) in {written['path']}"
    if written.get("precision") is not None:
        line += (f"; {written['precision']:.1%} of them were truly mislabelled; training noise "
                 f"{written['noise_rate_before']:.1%} -> {written['noise_rate_after']:.1%}")
    return line + f"; retrain with: sln train ... --labels {written['path']}"


def render_confidence(result: ConfidenceResult, console: Any) -> None:
    """Clean vs mislabelled means, the detection metrics, the last memorisation point, and the PNGs."""
    from rich.table import Table

    table = Table(title=f"sln analyze confidence: {result['name']} ({result['weights']} weights, epoch "
                        f"{result['epoch']}, training split)")
    for header in ("samples", "count", "max-prob", "entropy", "margin", "loss vs noisy label"):
        table.add_column(header, justify="left" if header == "samples" else "right")
    groups = {"clean": (result["num_samples"] - result["num_mislabelled"], result["clean"]),
              "mislabelled": (result["num_mislabelled"], result["mislabelled"])}
    for name, (count, scores) in groups.items():
        values = [scores[key]["mean"] for key in ("max_probability", "entropy", "margin", "loss")]
        table.add_row(name, str(count), *("-" if v is None else f"{v:.4f}" for v in values))
    console.print(table)
    detection = result["detection"]

    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    console.print(f"loss flags mislabelled samples: AUROC {show(result['auroc_loss'])}; flagging the "
                  f"{detection['flagged']} highest losses: precision {show(detection['precision'])}, "
                  f"recall {show(detection['recall'])}", markup=False, highlight=False)
    curve = result["memorisation"]
    if curve["epochs"]:
        raw = curve["raw"]["noisy_label"][-1]
        console.print(f"memorised (raw, epoch {curve['epochs'][-1]}, from {curve['source']}): {raw:.2%}",
                      markup=False, highlight=False)
    for what, path in result["plots"].items():
        console.print(f"{what}: {path}", markup=False, highlight=False)




def render_landscape(results: list[LandscapeResult], console: Any) -> None:
    """One row of sharpness numbers per run, then the PNGs."""
    from sln_cli.render.tables import Column, print_table

    first = results[0]
    caption = (f"{first['samples']} training samples ({first['labels']} labels), seed {first['seed']}; Lanczos "
               f"tolerance {first['hessian']['tolerance']:g}; Hutchinson {first['hutchinson_samples']} Rademacher "
               f"vectors; sharpness within rho {first['rho']:g}")
    rows = []
    for result in results:
        eigen = ", ".join(f"{value:.4g}" for value in result["hessian_eigenvalues"])
        if not result["hessian"]["converged"]:
            eigen += " (not converged)"
        rows.append([result["name"], result["weights"], _short_number(result["loss"]), eigen,
                     f"{_short_number(result['hessian_trace'])} ± {_short_number(result['hessian_trace_stderr'])}",
                     f"{_short_number(result['sharpness_avg'])} ± {_short_number(result['sharpness_avg_stderr'])}",
                     _short_number(result["sharpness_worst"])])
    values = [Column(header) for header in ("loss", "top eigenvalues", "trace ± s.e.", "avg sharpness ± s.e.",
                                            "worst sharpness")]
    print_table(console, title="sln analyze landscape", keys=[Column("run", left=True), Column("weights", left=True)],
                values=values, rows=rows, caption=caption)
    for what, path in first["plots"].items():
        console.print(f"{what}: {path}", markup=False, highlight=False)


def render_noise(result: NoiseResult, console: Any) -> None:
    """The estimators' noise rates beside the truth (when known), and where the heat maps went."""
    from rich.table import Table

    truth = result["truth"]
    table = Table(title=f"sln analyze noise {result['run_dir']} ({result['samples']} training samples)")
    for column in ("estimator", "noise rate", "rate error", "MAE of T"):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for name, estimate in result["estimators"].items():
        if estimate is None:
            table.add_row(name.replace("_", " "), "— (pip install 'sln-cli[cleanlab]')", "", "")
            continue
        table.add_row(name.replace("_", " "), f"{estimate['noise_rate']:.2%}",
                      *(["", ""] if truth is None else
                        [f"{estimate['noise_rate_error']:.2%}", f"{estimate['transition_mae']:.4f}"]))
    if truth is not None:
        table.add_row("truth (labels)", f"{truth['noise_rate']:.2%}", "", "")
    console.print(table)
    if result["figures"]:
        console.print(f"heat maps: {', '.join(result['figures'])}", markup=False, highlight=False)
