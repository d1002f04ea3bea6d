"""The config schema: precedence, strictness (unknown keys, wrong types), and the resolved config as a preset."""

import pytest
import yaml

from sln_cli import config, presets
from sln_cli.errors import SlnError


def test_defaults_are_the_paper_cifar_setting():
    c = config.resolve()
    assert (c.optim.lr, c.optim.batch_size, c.optim.epochs) == (0.001, 128, 300)
    assert (c.optim.momentum, c.optim.weight_decay, c.ema.decay) == (0.9, 5e-4, 0.999)
    assert c.model.name == "wrn-28-2"


def test_precedence_defaults_preset_set_flags():
    preset = {"optim": {"epochs": 10, "lr": 0.1}, "sln": {"sigma": 0.2}}
    c = config.resolve(preset, ["optim.epochs=20", "sln.sigma=0.3"], {"optim.epochs": 30, "sln.sigma": None})
    assert c.optim.epochs == 30  # flag beats --set beats preset
    assert c.sln.sigma == 0.3  # a flag left as None does not override
    assert c.optim.lr == 0.1  # preset beats default
    assert c.optim.batch_size == 128  # default


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ({"optim": {"epoch": 3}}, "did you mean 'optim.epochs'"),
        ({"optimizer": {}}, "did you mean 'optim'"),
        ({"optim": {"epochs": "ten"}}, "optim.epochs must be int"),
        ({"optim": {"epochs": True}}, "optim.epochs must be int"),
        ({"run": {"precision": "fp8"}}, "run.precision must be one of fp32, bf16, fp16"),
        ({"noise": {"mode": "symm"}}, "did you mean 'sym'"),
        ({"noise": {"rate": 1.5}}, "noise.rate must be in [0, 1]"),
        ({"optim": 3}, "must be a mapping"),
        ({"sln": {"correction": 0}}, "sln.correction must be an epoch number >= 1"),
        ({"run": {"eval_batch_size": 0}}, "run.eval_batch_size must be at least 1"),
        ({"optim": {"momentum": -0.5}}, "optim.momentum must not be negative"),
        ({"data": {"workers": -1}}, "data.workers must not be negative"),
        ({"data": {"balanced_per_class": 0}}, "data.balanced_per_class must be at least 1"),
        ({"sln": {"grad_noise_sigma": -1}}, "sln.grad_noise_sigma must not be negative"),
        ({"data": {"resize": 256, "crop": 300}}, "data.crop (300) must not exceed data.resize (256)"),
    ],
)
def test_bad_presets_name_the_key(preset, message):
    with pytest.raises(SlnError, match=None) as info:
        config.resolve(preset)
    assert message in str(info.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(SlnError) as info:
        config.resolve({"optim": {"epoch": 3, "lr": "fast"}, "sln": {"sigmaa": 1}})
    text = str(info.value)
    assert "optim.epoch" in text and "optim.lr" in text and "sln.sigmaa" in text


def test_set_parses_yaml_values_and_rejects_malformed_items():
    c = config.resolve(None, ["optim.lr_milestones=[5, 8]", "noise.labels=a:b.csv", "sln.correction=null"])
    assert c.optim.lr_milestones == (5, 8)
    assert c.noise.labels == "a:b.csv"
    assert c.sln.correction is None
    assert config.resolve(None, ["optim.lr=1e-3"]).optim.lr == 0.001  # YAML 1.1 reads 1e-3 as a string
    with pytest.raises(SlnError, match="section.key=value"):
        config.resolve(None, ["epochs=3"])


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert config.resolve({"optim": {"lr": 1}}).optim.lr == 1.0
    with pytest.raises(SlnError, match="optim.epochs must be int"):
        config.resolve({"optim": {"epochs": 2.5}})


def test_dumped_config_resolves_to_itself(tmp_path):
    original = config.resolve(presets.load("cifar10-sym-lc"), ["optim.lr_milestones=[100]"])
    path = tmp_path / "config.yaml"
    path.write_text(config.dump(original))
    assert config.resolve(config.load_yaml(path)) == original


@pytest.mark.parametrize("name", sorted(presets.available()))
def test_every_preset_resolves_and_describes_itself(name):
    tree = presets.load(name)
    assert tree.get("description"), f"preset {name} needs a one-line description"
    c = config.resolve(tree)
    assert c.description == tree["description"]
    real_noise = ("clothing1m", "animal10n", "webvision-mini")  # their own labels are the noise
    assert c.noise.mode != "none" or c.noise.labels is not None or c.data.dataset in real_noise or (
        c.sln.sigma == 0
    ), f"preset {name} must name the noise it expects"


def test_lc_twins_extend_their_base_with_correction_at_250():
    names = presets.available()
    for name in names:
        if name.endswith("-lc") and name.startswith("cifar"):
            base, twin = config.resolve(presets.load(name[:-3])), config.resolve(presets.load(name))
            assert twin.sln.correction == 250 and base.sln.correction is None
            assert twin.noise == base.noise and twin.sln.sigma == base.sln.sigma


@pytest.mark.parametrize(
    ("name", "dataset", "mode", "sigma"),
    [
        ("cifar10-sym", "cifar10", "sym", 1.0),
        ("cifar10-asym", "cifar10", "asym", 0.5),
        ("cifar10-dependent", "cifar10", "dependent", 0.5),
        ("cifar10-openset", "cifar10", "openset", 0.5),
        ("cifar100-sym", "cifar100", "sym", 0.2),
        ("cifar100-asym", "cifar100", "asym", 0.2),
        ("cifar100-dependent", "cifar100", "dependent", 0.1),
    ],
)
def test_cifar_presets_match_the_paper(name, dataset, mode, sigma):
    c = config.resolve(presets.load(name))
    assert (c.data.dataset, c.noise.mode, c.noise.rate, c.sln.sigma) == (dataset, mode, 0.4, sigma)
    assert (c.optim.lr, c.optim.batch_size, c.optim.epochs, c.model.name) == (0.001, 128, 300, "wrn-28-2")


def test_clothing1m_presets_match_the_paper():
    c = config.resolve(presets.load("clothing1m-lc"))
    assert (c.model.name, c.optim.batch_size, c.optim.epochs, c.optim.lr_milestones) == ("resnet50", 32, 10, (5,))
    assert (c.optim.weight_decay, c.sln.sigma, c.sln.correction, c.sln.correction_target) == (1e-3, 0.2, 1, "softmax")
    assert c.data.balanced_per_class == 18976


def test_unknown_preset_gets_a_hint():
    with pytest.raises(SlnError, match="did you mean cifar10-sym"):
        presets.load("cifar10-sim")


def test_extends_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"extends": str(tmp_path / "b.yaml")}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"extends": str(tmp_path / "a.yaml")}))
    with pytest.raises(SlnError, match="extends itself"):
        presets.load(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize(("name", "dataset", "method", "lr_u", "lr_v"), [
    ("sop-cifar10-sym", "cifar10", "sop", 10.0, 10.0),
    ("sop-cifar10-asym", "cifar10", "sop", 10.0, 10.0),
    ("sop-cifar100-sym", "cifar100", "sop", 1.0, 10.0),  # shengliu66/SOP README, symmetric example
    ("sop-cifar100-asym", "cifar100", "sop", 0.1, 100.0),  # shengliu66/SOP README, asymmetric example
    ("sop-plus-cifar10n-aggre", "cifar10", "sop-plus", 10.0, 10.0),
    ("sop-plus-cifar10n-worst", "cifar10", "sop-plus", 10.0, 10.0),
    ("sop-plus-cifar100n", "cifar100", "sop-plus", 1.0, 10.0),
])
def test_sop_presets_carry_the_official_recipe(name, dataset, method, lr_u, lr_v):
    c = config.resolve(presets.load(name))
    assert (c.data.dataset, c.method.name, c.method.lr_u, c.method.lr_v, c.sln.sigma) == (dataset, method, lr_u, lr_v,
                                                                                           0.0)
    # config_cifar100.json: SGD lr 0.02, momentum 0.9, weight decay 1e-3, batch 128, CosineAnnealingLR(300, 2e-4)
    optim = c.optim
    assert (optim.lr, optim.momentum, optim.weight_decay, optim.batch_size, optim.epochs) == (0.02, 0.9, 1e-3, 128, 300)
    assert (optim.lr_schedule, optim.lr_min, c.model.name) == ("cosine", 0.0002, "resnet34")
    if method == "sop-plus":
        assert (c.method.ratio_consistency, c.method.ratio_balance) == (0.9, 0.1)


def test_the_cosine_schedule_is_torchs_cosine_annealing():
    import torch

    from sln_cli.training.train import learning_rate

    optim = config.resolve(presets.load("sop-cifar10-sym"), ["optim.epochs=7"]).optim
    parameter = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([parameter], lr=optim.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=7, eta_min=optim.lr_min)
    for epoch in range(1, 8):  # the official trainer steps the scheduler after each epoch
        assert learning_rate(optim, epoch) == pytest.approx(sgd.param_groups[0]["lr"], rel=1e-9)
        sgd.step()
        scheduler.step()
    step = config.resolve(presets.load("cifar10-sym"), ["optim.lr_milestones=[2]"]).optim
    assert [learning_rate(step, e) for e in (1, 2, 3)] == [0.001, 0.001, pytest.approx(0.0001)]
