"""The `method` config section: per-dataset defaults, which of SLN's switches a method keeps, and the
one-line errors for nonsense combinations and out-of-range hyperparameters."""

import pytest

from sln_cli.config import resolve, to_dict
from sln_cli.errors import SlnError
from sln_cli.methods.catalog import display_name
from sln_cli.presets import load

QUICKSTART = load("quickstart")  # sets sln.sigma 0.5 for SLN


def _resolve(*overrides, preset=None, **flags):
    flags = {key.replace("__", "."): value for key, value in flags.items()}
    return resolve(QUICKSTART if preset is None else preset, list(overrides), flags)


def test_the_default_method_is_todays_sln():
    config = _resolve()
    assert config.method.name == "sln" and config.sln.sigma == 0.5
    assert resolve({"sln": {"sigma": 0.3}}).method.name == "sln"  # runs made before methods existed


def test_another_method_drops_the_presets_sln_noise_and_takes_its_defaults():
    config = _resolve(method__name="gce")
    assert config.sln.sigma == 0.0 and config.method.gce_q == 0.7
    assert config.method.sce_alpha is None and config.method.sam_rho is None  # keys it does not use stay null
    assert _resolve(method__name="ce").sln.sigma == 0.0


@pytest.mark.parametrize("dataset, alpha, beta", [("cifar10", 0.1, 1.0), ("cifar100", 6.0, 0.1), ("digits", 0.1, 1.0)])
def test_sce_defaults_follow_the_dataset(dataset, alpha, beta):
    config = _resolve(f"data.dataset={dataset}", method__name="sce")
    assert (config.method.sce_alpha, config.method.sce_beta) == (alpha, beta)


def test_per_dataset_defaults_of_elr_and_nce_rce():
    c100 = _resolve("data.dataset=cifar100", "method.name=elr")
    assert (c100.method.elr_lambda, c100.method.elr_beta) == (7.0, 0.9)
    c10 = _resolve("data.dataset=cifar10", "method.name=nce-rce")
    assert (c10.method.nce_rce_alpha, c10.method.nce_rce_beta) == (1.0, 1.0)


def test_sln_noise_combines_with_a_soft_target_loss_when_asked_for():
    config = _resolve(method__name="ls", sln__sigma=0.5)
    assert config.sln.sigma == 0.5 and config.method.smoothing == 0.1
    assert _resolve("sln.sigma=0.3", "method.name=elr").sln.sigma == 0.3


@pytest.mark.parametrize("overrides, flags, message", [
    ((), {"method.name": "gce", "sln.sigma": 0.5}, "sln.sigma acts on soft targets, but method gce"),
    ((), {"method.name": "ce", "sln.sigma": 0.5}, "sln.sigma must be 0 with method ce"),
    (("sln.correction=10",), {"method.name": "coteaching"}, "sln.correction acts on soft targets"),
    (("method.gce_q=0.5",), {"method.name": "sce"}, "method.gce_q is a setting of gce; method sce does not use it"),
    (("method.gce_q=1.5",), {"method.name": "gce"}, "method.gce_q must be in (0.0, 1.0], got 1.5"),
    (("method.gce_q=0",), {"method.name": "gce"}, "method.gce_q must be in (0.0, 1.0], got 0"),
    (("method.bootstrap_beta=-0.1",), {"method.name": "bootstrap-soft"}, "method.bootstrap_beta must be in [0.0, 1.0]"),
    (("method.elr_beta=1",), {"method.name": "elr"}, "method.elr_beta must be in [0.0, 1.0)"),
    (("method.sam_rho=0.1",), {"method.name": "gce"}, "method.sam_rho is a setting of SAM"),
    (("run.precision=fp16",), {"method.sam": True}, "method.sam does not work with fp16"),
    ((), {"method.name": "gcee"}, "method.name must be one of sln, ce, gce"),
])
def test_nonsense_is_refused_naming_the_key(overrides, flags, message):
    with pytest.raises(SlnError) as error:
        _resolve(*overrides, **{k.replace(".", "__"): v for k, v in flags.items()})
    assert message in str(error.value)


def test_keys_of_the_method_a_preset_chose_go_when_another_is_asked_for():
    preset = {**QUICKSTART, "sln": {"sigma": 0.0}, "method": {"name": "gce", "gce_q": 0.5}}
    assert _resolve(preset=preset).method.gce_q == 0.5
    assert _resolve(preset=preset, method__name="sce").method.gce_q is None


def test_sam_takes_its_radius_and_combines_with_any_method():
    config = _resolve(method__name="coteaching", method__sam=True)
    assert config.method.sam and config.method.sam_rho == 0.05 and config.method.forget_epochs == 10


@pytest.mark.parametrize("flags", [{"method.name": "ls", "sln.sigma": 0.5}, {"method.name": "coteaching"},
                                   {"method.name": "bootstrap-hard", "method.sam": True}])
def test_a_resolved_config_resolves_to_itself(flags):
    config = _resolve(**{k.replace(".", "__"): v for k, v in flags.items()})
    assert resolve(to_dict(config)) == config


def test_display_names_follow_the_contract():
    assert display_name("sln", 0.0, ema=False) == "CE"
    assert display_name("sln", 0.5, ema=True) == "SLN-MO"
    assert display_name("sln", 0.5, ema=True, correction=True) == "SLN-MO-LC"
    assert display_name("gce", 0.0, ema=True) == "GCE-MO"
    assert display_name("elr", 0.0, ema=False, sam=True) == "ELR+SAM"
    # SLN's noise inside another method names itself: runs of SOP and of SOP with --sigma are not pooled
    assert display_name("sop", 0.5, ema=False) == "SOP+SLN" and display_name("sop", 0.0, ema=False) == "SOP"
    assert display_name("ls", 0.5, ema=True, sam=True) == "LS-MO+SLN+SAM"
