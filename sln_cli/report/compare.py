"""Whether a cell reproduces the paper's: our mean against the published mean ± std, "within 1 point", and the
test of "reproduced": |Δ| ≤ 2·√(s²/n + s_paper²/n_paper), two standard errors of the difference of the two means
(s, n ours over finished seeds; s_paper, n_paper = 5 the paper's)."""

from __future__ import annotations

import math
from typing import Any

from sln_cli.report.paper import Published

ONE_POINT = 0.01  # one percentage point, as a fraction
_ROUNDING = 1e-9  # a difference of exactly one point is within it, whatever the float rounding


def against_paper(mean: float | None, std: float | None, n_runs: int, paper: Published | None) -> dict[str, Any]:
    """The cell's paper keys: paper, paper_std, paper_runs, paper_checked, delta, within_1_point, spread,
    within_spread (None where a side is missing; the spread needs our std, so two finished seeds at least)."""
    if paper is None:
        return dict.fromkeys(("paper", "paper_std", "paper_runs", "paper_checked", "delta", "within_1_point",
                              "spread", "within_spread"))
    delta = None if mean is None else mean - paper.mean
    spread = None
    if delta is not None and std is not None and paper.std is not None and n_runs > 1:
        spread = 2 * math.sqrt(std ** 2 / n_runs + paper.std ** 2 / paper.runs)
    return {
        "paper": paper.mean, "paper_std": paper.std, "paper_runs": paper.runs, "paper_checked": paper.checked,
        "delta": delta, "within_1_point": None if delta is None else abs(delta) <= ONE_POINT + _ROUNDING,
        "spread": spread,
        "within_spread": None if spread is None or delta is None else abs(delta) <= spread + _ROUNDING,
    }


def verdict_text(cell: dict[str, Any]) -> str:
    """`Δ +0.42: within 1 pt, within spread ±0.80` for a table cell ('' without a paper value or our mean)."""
    if cell.get("delta") is None:
        return ""
    one = "within 1 pt" if cell["within_1_point"] else "not within 1 pt"
    if cell.get("spread") is None:
        spread = "spread n/a"
    else:
        spread = f"{'within' if cell['within_spread'] else 'outside'} spread ±{cell['spread'] * 100:.2f}"
    return f"Δ {cell['delta'] * 100:+.2f}: {one}, {spread}"
