"""cleanlab's `find_label_issues` (confident learning, Northcutt et al. 2021) on a run's predicted probabilities,
for `sln analyze issues --compare cleanlab`; cleanlab is the optional extra `sln-cli[cleanlab]`.

cleanlab assumes out-of-sample probabilities (cross-validated: each sample predicted by a model that did not train
on it). A run's own network has trained on every sample, so this compares the two rankings on the same in-sample
probabilities; it is not cleanlab's recommended pipeline.
"""

from __future__ import annotations

import numpy as np

from sln_cli.errors import SlnError

INSTALL = "pip install 'sln-cli[cleanlab]'"
FILTER = "prune_by_noise_rate"  # cleanlab's default filter


def require_cleanlab() -> None:
    """A one-line SlnError saying how to install cleanlab when it is missing."""
    try:
        import cleanlab.filter  # noqa: F401
    except ImportError:
        raise SlnError(f"--compare cleanlab needs the optional cleanlab package: {INSTALL}") from None


def cleanlab_label_issues(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    """cleanlab's boolean mask of likely label issues (its default `filter_by`), single process."""
    require_cleanlab()
    from cleanlab.filter import find_label_issues

    probs = np.asarray(probabilities, np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows: cleanlab checks they sum to 1
    labels = np.asarray(given, np.int64)
    missing = sorted(set(range(probs.shape[1])) - set(labels.tolist()))
    if missing:
        raise SlnError(f"cleanlab needs every class among the given labels; classes {missing} have no sample")
    try:
        return np.asarray(find_label_issues(labels=labels, pred_probs=probs, filter_by=FILTER, n_jobs=1), bool)
    except (ValueError, AssertionError) as exc:  # cleanlab validates its inputs with both
        raise SlnError(f"cleanlab refused these probabilities: {str(exc).splitlines()[0]}") from None


def cleanlab_version() -> str | None:
    try:
        import cleanlab
    except ImportError:
        return None
    return str(cleanlab.__version__)
