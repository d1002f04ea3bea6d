"""PNG figures for `sln evaluate` / `sln analyze`: reliability diagrams, clean-vs-mislabelled histograms,
loss-landscape curves and contours, memorisation curves, noise transition matrices. Each function writes one PNG
atomically.

matplotlib is imported inside the functions (so importing this module is instant) and drawn on an explicit Agg
canvas (`Figure` + `FigureCanvasAgg`, no pyplot): headless, and no process-wide backend or figure state changes.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sln_cli.rundir.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sln_cli.analyze.calibration import ReliabilityBins
    from sln_cli.analyze.confidence import ConfidenceScores
    from sln_cli.analyze.landscape import LandscapeCurve, LandscapeGrid

DPI = 100
PANEL_INCHES = 4.0  # width and height of one subplot


def _figure(panels: int, max_columns: int = 4) -> tuple[Figure, list[Any]]:
    """A figure with `panels` subplots in rows of at most `max_columns`, on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(panels, max_columns)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(PANEL_INCHES * columns + 1, PANEL_INCHES * rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[panels:]:
        unused.set_visible(False)
    return figure, axes[:panels]


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> None:
    """The figure as a PNG at `path`, written atomically."""
    with atomic_write(path, "wb") as f:
        f.write(png_bytes(figure))


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


_save = save_figure


def plot_reliability(path: str | os.PathLike[str], diagrams: Mapping[str, ReliabilityBins], *,
                     title: str = "Reliability diagram") -> None:
    """One panel per run: accuracy per equal-width confidence bin, the gap to the bin's mean confidence (hatched
    outline), the number of samples above each bin, and the diagonal of perfect calibration."""
    _save(reliability_figure(diagrams, title=title), path)


def reliability_figure(diagrams: Mapping[str, ReliabilityBins], *, title: str = "Reliability diagram") -> Figure:
    """The figure of `plot_reliability`, unsaved (TensorBoard takes it as an image)."""
    figure, axes = _figure(len(diagrams))
    for axis, (name, bins) in zip(axes, diagrams.items(), strict=True):
        centres, width = (bins.edges[:-1] + bins.edges[1:]) / 2, np.diff(bins.edges)
        filled = bins.counts > 0
        accuracy, confidence = np.nan_to_num(bins.accuracy), np.nan_to_num(bins.confidence)
        axis.bar(centres, accuracy, width=width, edgecolor="black", color="tab:blue", alpha=0.75, label="accuracy")
        # the gap as an unfilled hatched outline from accuracy to mean confidence: where the model is
        # under-confident (SLN) it lies over the accuracy bar, which stays readable through the hatching
        axis.bar(centres[filled], (confidence - accuracy)[filled], bottom=accuracy[filled], width=width[filled],
                 fill=False, edgecolor="tab:red", hatch="//", linewidth=1.0, label="gap to mean confidence")
        axis.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
        for centre, count, top in zip(centres[filled], bins.counts[filled], np.maximum(accuracy, confidence)[filled],
                                      strict=True):  # samples per bin: a tall bar of 3 samples says little
            axis.text(centre, min(top + 0.01, 1.0), str(int(count)), ha="center", va="bottom", fontsize=6,
                      rotation=90 if len(centres) > 10 else 0)
        axis.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="confidence (top-1 probability)", ylabel="accuracy",
                 title=f"{name} (ECE {bins.ece:.3f})")
        axis.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    axes[0].legend(loc="upper left", fontsize=7)
    figure.suptitle(title + "; numbers: samples per bin")
    return figure


def plot_confidence_histograms(path: str | os.PathLike[str], scores: ConfidenceScores, mislabelled: np.ndarray, *,
                               title: str = "Confidence of clean vs mislabelled samples", bins: int = 30,
                               losses: np.ndarray | None = None, auroc: float | None = None) -> None:
    """Max-probability, entropy and margin histograms (densities), clean and mislabelled overlaid; with `losses`,
    also the per-sample loss against the given label, the score whose `auroc` the analysis reports."""
    panels = [("max-probability", scores.max_probability), ("entropy (nats)", scores.entropy),
              ("margin (top-1 - top-2)", scores.margin)]
    if losses is not None:
        named = "" if auroc is None else f", AUROC {auroc:.3f}"
        panels.append((f"loss vs given label (-log p){named}", np.asarray(losses, dtype=np.float64)))
    figure, axes = _figure(len(panels))
    for axis, (label, values) in zip(axes, panels, strict=True):
        edges = np.linspace(0.0, max(1.0, float(values.max(initial=0.0))), bins + 1)  # shared by both groups
        for group, mask, colour in (("clean", ~mislabelled, "tab:blue"), ("mislabelled", mislabelled, "tab:red")):
            if mask.any():
                axis.hist(values[mask], bins=edges, density=True, alpha=0.5, color=colour,
                          label=f"{group} ({int(mask.sum())})")
        axis.set(xlabel=label, ylabel="density", title=label)
        axis.legend()
    figure.suptitle(title)
    _save(figure, path)


def plot_landscape_curves(path: str | os.PathLike[str], curves: Mapping[str, LandscapeCurve], *,
                          xlabel: str = "alpha (filter-normalised direction)",
                          title: str = "Loss along a random direction") -> None:
    """Every run's 1D curve in one plot, the legend naming the runs (also for interpolations: xlabel "t")."""
    figure, (axis,) = _figure(1)
    for name, curve in curves.items():
        axis.plot(curve.coordinates, curve.losses, marker=".", label=name)
    axis.set(xlabel=xlabel, ylabel="loss", title=title)
    axis.legend()
    _save(figure, path)


def plot_landscape_surfaces(path: str | os.PathLike[str], grids: Mapping[str, LandscapeGrid], *, levels: int = 20,
                            max_loss: float | None = None, title: str = "Loss surface") -> None:
    """One contour panel per run on shared levels and one shared colour bar; losses above `max_loss` (default:
    the largest finite loss) fall in the top level, points not computed or infinite are left blank."""
    finite = np.concatenate([grid.losses[np.isfinite(grid.losses)] for grid in grids.values()])
    low = float(finite.min()) if finite.size else 0.0
    high = max(float(finite.max()) if finite.size else 1.0, low + 1e-12)
    shared_levels = np.linspace(low, high if max_loss is None else max(min(high, max_loss), low + 1e-12), levels)
    figure, axes = _figure(len(grids))
    for axis, (name, grid) in zip(axes, grids.items(), strict=True):
        surface = np.ma.masked_invalid(grid.losses.T)  # rows = betas (y), columns = alphas (x)
        filled = axis.contourf(grid.alphas, grid.betas, surface, levels=shared_levels, cmap="viridis",
                               extend="neither" if max_loss is None else "max")
        axis.contour(grid.alphas, grid.betas, surface, levels=shared_levels, colors="white", linewidths=0.4)
        axis.plot([0], [0], marker="*", color="red", markersize=10, linestyle="none", label="trained weights")
        axis.set(xlabel="alpha (direction 1)", ylabel="beta (direction 2)", title=name)
    axes[0].legend(loc="upper right")
    figure.colorbar(filled, ax=axes, label="loss")
    figure.suptitle(title)
    _save(figure, path)


def plot_memorisation(path: str | os.PathLike[str], curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                      *, ylabel: str = "mislabelled samples predicted as their wrong label",
                      title: str = "Memorisation of noisy labels") -> None:
    """Fraction against epoch for each named curve, `{name: (epochs, fractions)}`, on a 0-1 axis."""
    _save(memorisation_figure(curves, ylabel=ylabel, title=title), path)


def memorisation_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                        ylabel: str = "mislabelled samples predicted as their wrong label",
                        title: str = "Memorisation of noisy labels") -> Figure:
    """The figure of `plot_memorisation`, unsaved."""
    figure, (axis,) = _figure(1)
    for name, (epochs, fractions) in curves.items():
        axis.plot(epochs, fractions, marker=".", label=name)
    axis.set(xlabel="epoch", ylabel=ylabel, ylim=(0, 1), title=title)
    axis.legend()
    return figure


MATRIX_NUMBERS_LIMIT = 20  # above this many classes the heat map shows no per-cell numbers (unreadable)


def plot_transition_matrix(path: str | os.PathLike[str], matrix: np.ndarray, classes: Sequence[str], *,
                           title: str = "Label transition matrix") -> None:
    """Heat map of a row-normalised K x K matrix (row = true class, column = given label), class names on the
    axes; each cell's percentage is printed when K <= MATRIX_NUMBERS_LIMIT."""
    _heat_map(path, np.asarray(matrix, dtype=np.float64), classes, xlabel="label given (noisy)",
              bar="fraction of the true class", title=title)


def plot_confusion_matrix(path: str | os.PathLike[str], counts: np.ndarray, classes: Sequence[str], *,
                          title: str = "Confusion matrix") -> None:
    """`sln evaluate --per-class`: counts (row = true class, column = prediction) shown as each row's fractions
    (the diagonal is the per-class accuracy), the percentages printed in the cells."""
    counts = np.asarray(counts, dtype=np.float64)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    _heat_map(path, fractions, classes, xlabel="predicted class", bar="fraction of the true class", title=title)


def _heat_map(path: str | os.PathLike[str], matrix: np.ndarray, classes: Sequence[str], *, xlabel: str, bar: str,
              title: str) -> None:
    size = len(classes)
    figure, (axis,) = _figure(1)
    inches = min(max(4.0, 0.45 * size + 2), 16.0)
    figure.set_size_inches(inches + 1.5, inches)
    shown = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    font = 8 if size <= 10 else 6
    ticks = np.arange(size) if size <= MATRIX_NUMBERS_LIMIT else np.arange(0, size, max(1, size // 20))
    axis.set_xticks(ticks, [classes[int(i)] for i in ticks], rotation=90, fontsize=font)
    axis.set_yticks(ticks, [classes[int(i)] for i in ticks], fontsize=font)
    axis.set(xlabel=xlabel, ylabel="true class", title=title)
    if size <= MATRIX_NUMBERS_LIMIT:
        for (i, j), value in np.ndenumerate(matrix):
            if value > 0:
                axis.text(j, i, f"{100 * value:.0f}" if value >= 0.005 else "<1", ha="center", va="center",
                          fontsize=font, color="white" if value > 0.5 else "black")
    colour_bar = figure.colorbar(shown, ax=axis, label=bar, shrink=0.8, ticks=[0, 0.25, 0.5, 0.75, 1])
    colour_bar.ax.set_yticklabels(["0%", "25%", "50%", "75%", "100%"])  # round values, not matplotlib's picks
    _save(figure, path)


LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "v", "D", "x", "+")


def plot_seed_bands(path: str | os.PathLike[str],
                    panels: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]]], *,
                    ylabel: str, title: str) -> None:
    """One panel per setting, one line per method: the mean over seeds against the epoch, with a band of ± one
    standard deviation (the paper's Figure 1 style). Values are fractions, drawn in percent."""
    figure, axes = _figure(len(panels), max_columns=3)
    for axis, (setting, lines) in zip(axes, panels.items(), strict=True):
        for number, (method, (epochs, mean, std)) in enumerate(lines.items()):
            step = max(1, len(epochs) // 10)  # ten markers a line, staggered so that coinciding lines show both
            mean_pct, std_pct = np.asarray(mean) * 100, np.asarray(std) * 100
            # its own dash pattern and marker: methods whose curves coincide (SLN-MO, SLN-MO-LC) both stay visible
            axis.plot(epochs, mean_pct, label=method, linewidth=1.5, linestyle=LINE_STYLES[number % len(LINE_STYLES)],
                      marker=MARKERS[number % len(MARKERS)], markevery=(number * step // len(lines), step),
                      markersize=5, markerfacecolor="none")
            axis.fill_between(epochs, mean_pct - std_pct, mean_pct + std_pct, alpha=0.2)
        axis.set_title(setting)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle(title)
    _save(figure, path)
