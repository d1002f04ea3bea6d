"""`sln analyze issues`: the training samples whose given label is probably wrong, ranked, with a suggested label,
written as issues.csv and a contact sheet of the most suspect images; measured against the truth when it is known,
and optionally beside cleanlab's `find_label_issues` on the same probabilities.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sln_cli.analyze import ranking, relabel
from sln_cli.analyze.workflow import check_weights, json_ready, one_target
from sln_cli.errors import SlnError
from sln_cli.rundir import runs
from sln_cli.rundir.files import atomic_write
from sln_cli.rundir.ownership import prepare_output_dir
from sln_cli.training.checkpoints import (
    LoadedRun,
    SplitData,
    epoch_checkpoints,
    file_label,
    load_run,
    load_states,
    predict,
    split_data,
)
from sln_cli.training.devices import resolve_device

CSV_NAME, SHEET_NAME = "issues.csv", "contact-sheet.png"
SCORE_MEANINGS = {"loss": "loss: -log p(given label), high = suspect",
                  "probability": "probability: p(given label), low = suspect",
                  "clean-probability": "clean-probability: DivideMix's clean posterior of the given label (mean of its "
                                       "two networks' GMMs at the last division, checkpoint.pt), low = suspect"}
COMPARE = ("cleanlab",)


@dataclass(frozen=True)
class IssuesSettings:
    weights: str = "ema"  # the EMA (SLN-MO) memorises the wrong labels least
    score: str = "loss"
    average_checkpoints: bool = False  # mean softmax over checkpoints/epoch-*.pt instead of the one checkpoint
    top: int = 20  # rows printed, in --json and on the contact sheet
    threshold: float | None = None  # flag by score; default: flag where the network disagrees with the label
    noise_rate: float | None = None  # r of precision/recall at r·N; default the realised rate
    compare: str | None = None
    batch_size: int | None = None
    write_labels: str | None = None  # relabel or drop: write a new label file (`sln_cli.analyze.relabel`)
    write_top: int | None = None  # with write_labels: change the top N most suspect instead of the flagged ones

    def check(self) -> None:
        check_weights(self.weights)
        if self.score not in ranking.SCORES + ranking.RUN_SCORES:
            raise SlnError(f"unknown --score {self.score!r}; use loss, probability or clean-probability")
        if self.top < 1:
            raise SlnError(f"--top must be at least 1, got {self.top}")
        if self.noise_rate is not None and not 0 <= self.noise_rate <= 1:
            raise SlnError(f"--noise-rate must be between 0 and 1, got {self.noise_rate}")
        if self.compare is not None and self.compare not in COMPARE:
            raise SlnError(f"--compare knows only cleanlab, got {self.compare!r}")
        if self.threshold is not None:
            ranking.flagged_by_threshold(np.zeros(0), self.score, self.threshold)  # its range checks
        relabel.check_request(self.write_labels, self.write_top, self.threshold)


def analyze_issues(target: str | Path, *, checkpoint: str | None = None, out: Path | None = None,
                   device: str = "auto", overwrite: bool = False, **settings: Any) -> dict[str, Any]:
    """Rank every training sample of a run by how likely its given label is wrong; write issues.csv and the
    contact sheet into `out` (default RUN/analysis/issues-<run>-<weights>); return a JSON-ready summary.
    `settings`: the fields of `IssuesSettings`."""
    options = IssuesSettings(**settings)
    options.check()
    if options.compare == "cleanlab":
        from sln_cli.analyze.cleanlab_issues import cleanlab_version, require_cleanlab

        require_cleanlab()  # before any work
    run = load_run(one_target(target, checkpoint, "sln analyze issues"), resolve_device(device))
    data = split_data(run, "train", true_labels=False)
    assert data.noisy is not None, "the train split carries the labels the run trained on"
    if options.top > len(data.noisy):
        raise SlnError(f"--top {options.top} is larger than the training set ({len(data.noisy)} samples)")
    if options.noise_rate is not None and run.trainset.clean is None:
        raise SlnError("--noise-rate sets r of precision/recall at r·N, which need true labels; this run has none")
    suffix = "-averaged" if options.average_checkpoints else ""
    out_dir = Path(out) if out is not None else (
        run.target.run_dir / "analysis" / f"issues-{file_label(run.target.name)}-{options.weights}{suffix}")
    files = {"csv": out_dir / CSV_NAME, "contact_sheet": out_dir / SHEET_NAME}
    if options.write_labels is not None:
        relabel.require_label_file(run.target.run_dir)
        files["labels"] = relabel.labels_path(out_dir, options.write_labels)
    # sln's own folder (RUN/analysis/issues-*, or an --out it made) is refreshed; another needs --overwrite
    owned = [path.name for path in files.values()] + [path.with_suffix(".json").name for path in files.values()
                                                      if path.suffix == ".csv" and path.name != CSV_NAME]
    prepare_output_dir(out_dir, owned, overwrite=overwrite, create=False)  # before any work

    batch_size = run.config.run.eval_batch_size if options.batch_size is None else options.batch_size
    probs, epochs = _probabilities(run, data, options.weights, options.average_checkpoints, batch_size)
    table = _rank(run, data, probs, options, batch_size)
    result = _summary(run, data, options, epochs, table)
    if options.compare == "cleanlab":
        result["cleanlab"] = _compare_cleanlab(probs, table) | {"version": cleanlab_version()}
        table["cleanlab_issue"] = result["cleanlab"].pop("mask")
    prepare_output_dir(out_dir, owned, overwrite=overwrite)
    _write_csv(files["csv"], table, run.trainset.dataset.classes)
    if options.write_labels is not None:
        result["labels_written"] = relabel.write_labels(
            files["labels"], run, data, table, action=options.write_labels, top=options.write_top,
            rule=result["flagged_by"] if options.write_top is None else f"by {options.score}", weights=options.weights)
    _contact_sheet(files["contact_sheet"], run, table, options, result["title"])
    result["files"] = {key: str(path) for key, path in files.items()}
    result["top"] = _top_rows(table, run.trainset.dataset.classes, options.top)
    return json_ready(result)


def _probabilities(run: LoadedRun, data: SplitData, weights: str, average: bool,
                   batch_size: int) -> tuple[np.ndarray, list[int | None]]:
    """Softmax of the chosen weights on un-augmented training images, or its mean over the kept epoch checkpoints."""
    if not average:
        return predict(run.network(weights), data.images, batch_size=batch_size).astype(np.float64), [run.epoch]
    paths = epoch_checkpoints(run.target.run_dir)
    if not paths:
        raise SlnError(f"{run.target.run_dir} kept no epoch checkpoints to average (checkpoints/epoch-*.pt); train "
                       "with --set run.keep_checkpoints=N or drop --average-checkpoints")
    assert data.noisy is not None, "the train split carries the labels the run trained on"
    total, epochs = np.zeros((len(data.noisy), run.num_classes)), []
    for path in paths:
        states, epoch = load_states(path, run.device)
        total += predict(run.network(weights, states[weights]), data.images, batch_size=batch_size)
        epochs.append(epoch)
    return total / len(paths), epochs


def _rank(run: LoadedRun, data: SplitData, probs: np.ndarray, options: IssuesSettings,
          batch_size: int) -> dict[str, np.ndarray]:
    """Per-sample columns in sample order; `order` lists the samples most suspect first."""
    assert data.noisy is not None, "the train split carries the labels the run trained on"
    given, rows = data.noisy, np.arange(len(data.noisy))
    scores = (_clean_probability(run, len(given)) if options.score == "clean-probability"
              else ranking.given_label_scores(probs, given, options.score))
    order = ranking.rank_order(scores, options.score)
    suggested = probs.argmax(axis=1)  # ties towards the lower class, as argmax everywhere in sln
    flagged = (suggested != given if options.threshold is None
               else ranking.flagged_by_threshold(scores, options.score, options.threshold))
    rank = np.empty(len(given), np.int64)
    rank[order] = np.arange(1, len(given) + 1)
    table = {"order": order, "rank": rank, "index": data.indices, "given_label": given,
             "suggested_label": suggested, "score": scores, "p_given": probs[rows, given],
             "p_suggested": probs[rows, suggested], "flagged": flagged}
    files = run.trainset.dataset.train.files
    if files is not None:
        table["path"] = np.array([str(path) for path in files], dtype=object)
    if run.config.sln.correction is not None:
        table["lc_weight"] = _lc_weights(run, data, batch_size)
    if run.trainset.clean is not None:
        table["true_label"], table["mislabelled"] = data.labels, given != data.labels
    return table


def _clean_probability(run: LoadedRun, num_samples: int) -> np.ndarray:
    """DivideMix's clean posterior of each training sample, the mean of its two networks' GMMs, from the last
    division saved in checkpoint.pt (`methods.dividemix`)."""
    if run.config.method.name != "dividemix":
        raise SlnError(f"--score clean-probability is DivideMix's division; {run.target.run_dir} trained with "
                       f"method {run.config.method.name}; use --score loss or probability")
    resumable = run.target.run_dir / runs.CHECKPOINT
    saved = runs.load_torch(resumable) if resumable.is_file() else {}
    method = saved.get("method") if isinstance(saved, dict) else None
    probability = method.get("probability") if isinstance(method, dict) else None
    if not isinstance(probability, torch.Tensor):
        raise SlnError(f"{resumable} holds no DivideMix division (the run stopped during its warm-up, or the file is "
                       "missing); use --score loss or probability")
    if probability.shape != (2, num_samples):
        raise SlnError(f"the division in {resumable} does not fit this run's {num_samples} training samples; was the "
                       "run directory modified?")
    return probability.double().mean(dim=0).cpu().numpy()


def _lc_weights(run: LoadedRun, data: SplitData, batch_size: int) -> np.ndarray:
    """The weight label correction gives the given label, `w = minmax(EMA loss against the run's targets)`
    (`losses.correction_weight`), from this checkpoint's EMA on un-augmented images and the targets saved in
    checkpoint.pt (the one-hot given labels when it holds none)."""
    from sln_cli.methods.sln import correction_weight

    probs = torch.as_tensor(predict(run.network("ema"), data.images, batch_size=batch_size), dtype=torch.float64)
    targets = torch.nn.functional.one_hot(torch.as_tensor(data.noisy), run.num_classes).double()
    resumable = run.target.run_dir / runs.CHECKPOINT
    if resumable.is_file():
        saved = runs.load_torch(resumable).get("targets")
        if isinstance(saved, torch.Tensor) and saved.shape == targets.shape:
            targets = saved.double().cpu()
    losses = -(targets * probs.clamp_min(1e-12).log()).sum(dim=1)
    return correction_weight(losses).numpy()


def _summary(run: LoadedRun, data: SplitData, options: IssuesSettings, epochs: list[int | None],
             table: dict[str, np.ndarray]) -> dict[str, Any]:
    assert data.noisy is not None, "the train split carries the labels the run trained on"
    averaged = f", mean of {len(epochs)} epoch checkpoints" if options.average_checkpoints else ""
    result: dict[str, Any] = {
        "run": str(run.target.run_dir), "name": run.target.name, "checkpoint": str(run.target.checkpoint),
        "epoch": run.epoch, "weights": options.weights, "score": options.score,
        "score_meaning": SCORE_MEANINGS[options.score],
        "inputs": "un-augmented training images", "averaged_epochs": epochs if options.average_checkpoints else None,
        "suggested_label": f"argmax of the same {options.weights} probabilities",
        "num_samples": len(data.noisy), "num_classes": run.num_classes, "classes": list(run.trainset.dataset.classes),
        "threshold": options.threshold, "num_flagged": int(table["flagged"].sum()),
        "flagged_by": "the suggested label differs from the given one" if options.threshold is None
        else f"{options.score} {'>=' if options.score == 'loss' else '<='} {options.threshold:g}",
        "lc_weight": "lc_weight" in table, "truth_known": "mislabelled" in table,
        "title": f"{run.target.name}: {options.weights} weights, epoch {run.epoch}{averaged}; "
                 f"top {options.top} by {options.score}"}
    if "mislabelled" in table:
        truth = table["mislabelled"]
        result |= {"num_mislabelled": int(truth.sum()), "realized_noise_rate": float(truth.mean())}
        result["detection"] = ranking.ranking_report(table["score"], options.score, truth,
                                                     noise_rate=options.noise_rate, top=options.top)
        result["detection"]["flagged"] = ranking.flag_metrics(table["flagged"], truth)
    return result


def _compare_cleanlab(probs: np.ndarray, table: dict[str, np.ndarray]) -> dict[str, Any]:
    """cleanlab's flagged set beside ours: the same number of our most suspect samples, and our flagged set."""
    from sln_cli.analyze.cleanlab_issues import FILTER, cleanlab_label_issues

    mask = cleanlab_label_issues(probs, table["given_label"])
    count = int(mask.sum())
    ours = ranking.top_mask(table["order"], count)
    result = {"find_label_issues": {"filter_by": FILTER}, "count": count,
              "probabilities": "the run's in-sample probabilities (cleanlab assumes out-of-sample ones)",
              "overlap_with_top_same_count": ranking.overlap(ours, mask),
              "overlap_with_flagged": ranking.overlap(table["flagged"], mask), "mask": mask}
    if "mislabelled" in table:
        theirs = ranking.flag_metrics(mask, table["mislabelled"])
        result |= {"precision": theirs["precision"], "recall": theirs["recall"],
                   "ours_at_same_count": ranking.flag_metrics(ours, table["mislabelled"])}
    return result


COLUMNS = ("rank", "index", "path", "given_label", "given_class", "suggested_label", "suggested_class", "score",
           "p_given", "p_suggested", "flagged", "lc_weight", "true_label", "true_class", "mislabelled",
           "cleanlab_issue")


def _cells(table: dict[str, np.ndarray], classes: tuple[str, ...], sample: int) -> dict[str, Any]:
    """One sample's row: plain Python values, class names beside class numbers, only the columns present."""
    row: dict[str, Any] = {}
    for column in COLUMNS:
        source = column.replace("_class", "_label")
        if column.endswith("_class") and source in table:
            row[column] = classes[int(table[source][sample])]
        elif column in table:
            value = table[column][sample]
            row[column] = value.item() if isinstance(value, np.generic) else value
    return row


def _write_csv(path: Path, table: dict[str, np.ndarray], classes: tuple[str, ...]) -> None:
    """Every training sample, most suspect first; floats with 6 significant digits, booleans as 1/0."""
    rows = [_cells(table, classes, int(sample)) for sample in table["order"]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(value) for key, value in row.items()})
    with atomic_write(path, "w") as f:
        f.write(buffer.getvalue())


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    return f"{value:.6g}" if isinstance(value, float) else value


def _top_rows(table: dict[str, np.ndarray], classes: tuple[str, ...], top: int) -> list[dict[str, Any]]:
    return [_cells(table, classes, int(sample)) for sample in table["order"][:top]]


def _contact_sheet(path: Path, run: LoadedRun, table: dict[str, np.ndarray], options: IssuesSettings,
                   title: str) -> None:
    """The top samples' images, `#rank index`, given -> suggested class (and the true class when known); red
    captions: the given label is truly wrong."""
    from sln_cli.render.gallery import Tile, contact_sheet, split_images

    classes, chosen = run.trainset.dataset.classes, [int(i) for i in table["order"][:options.top]]
    tiles = []
    for sample, image in zip(chosen, split_images(run.trainset.dataset.train, chosen), strict=True):
        given, suggested = (_short(classes[table[key][sample]]) for key in ("given_label", "suggested_label"))
        caption = f"#{table['rank'][sample]}  i={table['index'][sample]}\n{given} → {suggested}"
        colour = "black"
        if "mislabelled" in table:
            caption += f"\ntrue: {_short(classes[table['true_label'][sample]])}"
            colour = "tab:red" if table["mislabelled"][sample] else "black"
        tiles.append(Tile(image, caption, colour))
    legend = "\ngiven → suggested label; red: the given label is wrong" if "mislabelled" in table \
        else "\ngiven → suggested label"
    contact_sheet(path, tiles, title=title + legend)


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"

