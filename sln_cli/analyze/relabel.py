"""`sln analyze issues --write-labels relabel|drop`: the run's label file with the flagged samples relabelled to the
suggested class (or left out, label_noisy -1), and a manifest saying which samples changed, from which run and rule;
`sln train --labels FILE` trains on it (the clean-and-retrain loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sln_cli.errors import SlnError
from sln_cli.labels.labelfile import DROPPED, NoisyLabels, read_label_file, write_label_file
from sln_cli.training.checkpoints import LoadedRun, SplitData

ACTIONS = ("relabel", "drop")


def check_request(action: str | None, top: int | None, threshold: float | None) -> None:
    if action is None:
        return
    if action not in ACTIONS:
        raise SlnError(f"--write-labels takes relabel or drop, got {action!r}")
    if top is not None and threshold is not None:
        raise SlnError("--write-labels changes either the --top N most suspect samples or those past --threshold "
                       "T; give one of them")


def chosen(table: dict[str, np.ndarray], top: int | None) -> tuple[np.ndarray, str]:
    """Which samples (a mask in the run's sample order) change, and the rule in words."""
    if top is None:  # the flagged ones: past --threshold, or where the network disagrees with the label
        return table["flagged"].astype(bool), "flagged"
    mask = np.zeros(len(table["order"]), dtype=bool)
    mask[table["order"][:top]] = True
    return mask, f"the {top} most suspect"


def labels_path(out_dir: Path, action: str) -> Path:
    return out_dir / f"labels-{action}.csv"


def write_labels(path: Path, run: LoadedRun, data: SplitData, table: dict[str, np.ndarray], *, action: str,
                 top: int | None, rule: str, weights: str) -> dict[str, Any]:
    """Write the new label file; return what changed (and, with true labels, how well) for the JSON summary."""
    base = read_label_file(run.target.run_dir / "labels.csv")  # the full label file the run trained on
    mask, which = chosen(table, top)
    positions = np.asarray(data.indices)[mask]  # rows of the full training split
    noisy = base.noisy.copy()
    noisy[positions] = table["suggested_label"][mask] if action == "relabel" else DROPPED
    changed = positions[noisy[positions] != base.noisy[positions]]
    # what describes the dataset carries over; how the run's labels were made goes under derived_from.labels
    kept_keys = ("dataset", "num_classes", "classes")
    manifest = {key: base.manifest[key] for key in kept_keys if key in base.manifest}
    made = {key: value for key, value in base.manifest.items() if key not in kept_keys
            and not key.startswith(("sha256", "format", "num_samples"))}
    if base.clean is not None:
        kept = noisy != DROPPED
        manifest["realized_noise_rate"] = float((noisy[kept] != base.clean[kept]).mean()) if kept.any() else None
    manifest |= {
        "derived_from": {"run": str(run.target.run_dir), "checkpoint": str(run.target.checkpoint),
                         "epoch": run.epoch, "weights": weights, "labels_sha256": base.manifest.get("sha256_noisy"),
                         "labels": made},
        "action": action, "rule": f"{which} ({rule})", "num_changed": int(changed.size),
        "changed_indices": changed.tolist(),
    }
    written = write_label_file(path, NoisyLabels(noisy, base.clean, base.source_index, manifest))
    result: dict[str, Any] = {"path": str(path), "manifest": str(path.with_suffix(".json")), "action": action,
                              "rule": manifest["rule"], "num_selected": int(mask.sum()),
                              "num_changed": written["num_changed"]}
    if base.clean is not None:
        result |= _against_truth(base, noisy, changed, np.asarray(data.indices))
    return result


def _against_truth(base: NoisyLabels, noisy: np.ndarray, changed: np.ndarray, trained: np.ndarray) -> dict:
    """Precision of the changes (the sample's given label was wrong), labels fixed, and the noise before and after
    among the run's training samples (dropped ones left out)."""
    assert base.clean is not None
    wrong_before = base.noisy[changed] != base.clean[changed]
    kept = trained[noisy[trained] != DROPPED]
    return {
        "precision": float(wrong_before.mean()) if changed.size else None,
        "num_truly_mislabelled_changed": int(wrong_before.sum()),
        "num_now_correct": int((noisy[changed] == base.clean[changed]).sum()),
        "noise_rate_before": float((base.noisy[trained] != base.clean[trained]).mean()),
        "noise_rate_after": float((noisy[kept] != base.clean[kept]).mean()) if kept.size else None,
        "num_training_samples_after": int(kept.size),
    }


def require_label_file(run_dir: Path) -> None:
    if not (run_dir / "labels.csv").is_file():
        raise SlnError(f"{run_dir} has no labels.csv (runs record the labels they trained on since sln 0.1); "
                       "retrain it to write labels from it")

