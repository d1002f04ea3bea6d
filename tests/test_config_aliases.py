"""Renamed keys: the EMA's decay moved from `sln.ema_decay` to `ema.decay`, NCE+RCE's `method.apl_*` to
`method.nce_rce_*`. The old keys keep working everywhere and mean the
same, and an old run groups with a new one of the same decay."""

import pytest

from sln_cli.config import resolve, to_dict
from sln_cli.errors import SlnError
from sln_cli.rundir.experiments import as_it_ran, experiment_key
from sln_cli.tune.space import _field_type


def _old_format(tree: dict) -> dict:
    """A resolved tree as a run made before the move wrote it: the decay in `sln`, no `ema` section."""
    old = {key: value for key, value in tree.items() if key != "ema"}
    old["sln"] = {**tree["sln"], "ema_decay": tree["ema"]["decay"]}
    return old


@pytest.mark.parametrize("given", [({"sln": {"ema_decay": 0.5}}, [], {}), ({}, ["sln.ema_decay=0.5"], {}),
                                   ({}, [], {"sln.ema_decay": 0.5}), ({"ema": {"decay": 0.5}}, [], {})])
def test_the_old_key_and_the_new_one_mean_the_same(given):
    preset, overrides, flags = given
    config = resolve(preset, overrides, flags)
    assert config.ema.decay == 0.5 and "ema_decay" not in to_dict(config)["sln"]


def test_both_keys_with_different_values_and_a_bad_value_are_one_line_each():
    with pytest.raises(SlnError, match=r"^sln.ema_decay is the old name of ema.decay; give one of them$"):
        resolve({"sln": {"ema_decay": 0.5}, "ema": {"decay": 0.4}})
    with pytest.raises(SlnError, match=r"ema.decay \(sln.ema_decay\) must be in \[0, 1\), got 1.5"):
        resolve({}, ["sln.ema_decay=1.5"])


def test_an_old_run_and_a_new_one_with_the_same_decay_are_one_experiment():
    new = to_dict(resolve({"ema": {"decay": 0.9}}, ["run.seed=1"]))
    old = _old_format(to_dict(resolve({"ema": {"decay": 0.9}}, ["run.seed=2"])))
    assert experiment_key(old) == experiment_key(new)
    other = _old_format(to_dict(resolve({"ema": {"decay": 0.99}})))
    assert experiment_key(other) != experiment_key(new)
    assert resolve(as_it_ran(old)) == resolve(new, ["run.seed=2"])  # what --resume resolves


def test_tune_takes_the_old_key():
    assert _field_type("sln.ema_decay") is float


@pytest.mark.parametrize("given", [({"method": {"name": "nce-rce", "apl_alpha": 2.0, "apl_beta": 0.5}}, []),
                                   ({}, ["method.name=nce-rce", "method.apl_alpha=2", "method.apl_beta=0.5"]),
                                   ({}, ["method.name=nce-rce", "method.nce_rce_alpha=2", "method.nce_rce_beta=0.5"])])
def test_nce_rce_takes_its_old_apl_keys(given):
    method = resolve(*given).method
    assert (method.nce_rce_alpha, method.nce_rce_beta) == (2.0, 0.5)
    assert "apl_alpha" not in to_dict(resolve(*given))["method"]


def test_an_old_nce_rce_run_groups_with_a_new_one():
    new = to_dict(resolve({}, ["method.name=nce-rce", "method.nce_rce_alpha=2"]))
    old = {**new, "method": {("apl_" + k[len("nce_rce_"):] if k.startswith("nce_rce_") else k): v
                             for k, v in new["method"].items()}}
    assert "apl_alpha" in old["method"] and experiment_key(old) == experiment_key(new)
    assert resolve(as_it_ran(old)) == resolve(new)
    with pytest.raises(SlnError, match="method.apl_alpha is the old name of method.nce_rce_alpha"):
        resolve({"method": {"name": "nce-rce", "apl_alpha": 2.0, "nce_rce_alpha": 3.0}})
