"""One definition of "the same experiment with another seed", shared by `sln evaluate`, `sln report` and anything
that groups seeds: two runs are repeats when their resolved configs agree on every key except the seed and where
and how fast the run went (SEED_KEYS). A label correction that never ran (at or past the last epoch) is no part
of the experiment: such a run computed what its SLN twin computes.
"""

from __future__ import annotations

import json
from typing import Any

from sln_cli.rundir import runs

# (section, key) pairs that do not make another experiment; ("description", None): the free-text description
SEED_KEYS = frozenset({
    ("run", "seed"), ("run", "out"), ("run", "device"), ("run", "cpu_threads"), ("run", "keep_state_at"),
    ("run", "eval_batch_size"), ("data", "workers"), ("data", "data_dir"), ("description", None)})


def as_it_ran(tree: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config tree as what the run really computed: a label correction that never started (at or
    past its last epoch: refused by `sln train` now, possible in runs made before) dropped; `with_past_defaults`."""
    sln, optim = tree.get("sln"), tree.get("optim")
    if isinstance(sln, dict) and isinstance(optim, dict) and isinstance(sln.get("correction"), int) \
            and isinstance(optim.get("epochs"), int) and sln["correction"] >= optim["epochs"]:
        tree = {**tree, "sln": {**sln, "correction": None}}
    return with_past_defaults(tree)


def with_past_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    """A saved config tree with the defaults of its time where a default changed since: a `gce` run made before
    truncated GCE (no `gce_k` key) is plain Lq (`gce_k: 0`), so that a resume or a report keeps it so; and
    with renamed keys at their new place (`config.ALIASES`)."""
    from sln_cli.config import upgrade  # old keys at their new place (sln.ema_decay -> ema.decay)

    tree = upgrade(tree)
    method = tree.get("method")
    if isinstance(method, dict) and method.get("name") == "gce" and "gce_k" not in method:
        tree = {**tree, "method": {**method, "gce_k": 0.0}}
    return tree


def experiment(tree: dict[str, Any]) -> dict[str, Any]:
    """A config tree (config.yaml, or `config.to_dict`) as `section.key -> value`, without the seed keys."""
    tree = as_it_ran({**tree, "method": runs.method_section(tree)})
    return {f"{section}.{key}": value for section, values in tree.items() if isinstance(values, dict)
            for key, value in values.items() if (section, key) not in SEED_KEYS}


def experiment_key(tree: dict[str, Any]) -> str:
    """`experiment(tree)` as one string: equal keys, the same experiment."""
    return json.dumps(experiment(tree), sort_keys=True, default=str)
