"""The methods `sln train --method NAME` offers: paper, what each changes, hyperparameters with per-dataset
defaults and their sources; and the rules that resolve a config's `method` section and refuse combinations
that make no sense. The registry: one `MethodSpec` per method (`BUILTIN`, and plugins named in $SLN_METHODS that
call `register`). Torch-free: the config and the CLI read it without importing torch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sln_cli import plugins

if TYPE_CHECKING:
    from sln_cli.config import Config, MethodConfig


Bounds = tuple[Any, Any, bool, bool]  # (low, high, low inclusive, high inclusive); high None: unbounded


@dataclass(frozen=True)
class Hyperparameter:
    key: str  # under `method.`
    cifar10: Any  # default on CIFAR-10, and on every dataset without a published value of its own
    cifar100: Any  # default on CIFAR-100
    source: str  # where the defaults come from
    bounds: Bounds | None = None  # the values the config accepts (checked when it is resolved); None: any
    choices: tuple[str, ...] = ()  # the values a string key accepts; (): any
    by_noise: tuple[tuple[str, str, Any], ...] = ()  # (dataset, noise mode, default) over the per-dataset ones


@dataclass(frozen=True)
class Reference:
    repository: str  # official code, "owner/name"
    file: str  # the file the defaults and formulas were checked against
    commit: str  # the commit read


@dataclass(frozen=True)
class MethodSpec:
    """One training method, everything the harness knows of it: `register` adds one, `METHODS` holds them all."""

    name: str  # `--method NAME`, `method.name`: the one spelling
    paper: str
    changes: str  # what the method changes in the training step, in a few words
    soft_targets: bool  # its loss reads soft targets, so SLN's target noise (and label correction) can apply
    hyperparameters: tuple[Hyperparameter, ...] = ()
    reference: Reference | None = None
    factory: str = ""  # "package.module:Class" built with (MethodConfig, MethodContext), imported on demand (torch)
    display: str = ""  # how reports name it (`-MO`, `+SLN`, `+SAM` are added); "": the name upper-cased
    combinations: str | None = None  # how SLN (and SAM) combine with it, where more than the `soft_targets` rule
    refused_sln_keys: tuple[str, ...] = ()  # SLN's switches it refuses although its loss reads soft targets
    sam: bool = True  # whether --sam combines with it
    grad_clip: float | None = None  # optim.grad_clip it implies when the config leaves that null
    problems: Callable[[Config], list[str]] | None = None  # what else it refuses in a config, one line each
    # "module:function" (config, noisy, clean, *, manifest, replaced) -> config: defaults only the training labels
    # tell, filled before training (`methods.settle`); "": none
    settle: str = ""


MethodInfo = MethodSpec  # the name before the registry (tests, scripts)
DIVIDEMIX_COMMIT = "39740b267147466bac0779de91d969909ab3b65f"
DIVIDEMIX_CODE = "official code, Train_CIFAR.py"
SOP_COMMIT = "4d991cedf1fafec98f858a213ccc31e52318a77f"  # shengliu66/SOP, the commit read (2022-09-14)
_UNIT_OPEN_HIGH: Bounds = (0.0, 1.0, True, False)
_UNIT: Bounds = (0.0, 1.0, True, True)


def _at_least(low: Any) -> Bounds:
    return (low, None, True, True)


def _above(low: Any) -> Bounds:
    return (low, None, False, True)


def _same(key: str, value: Any, source: str, bounds: Bounds | None = None, **more: Any) -> Hyperparameter:
    return Hyperparameter(key, value, value, source, bounds, **more)


def _dividemix_problems(config: Config) -> list[str]:
    """What DivideMix cannot take: its own epoch replaces the step those switches act in."""
    sln, run, problems = config.sln, config.run, []
    for key, value, off in (("sln.correction", sln.correction, None), ("sln.grad_noise_sigma", sln.grad_noise_sigma,
                            0.0), ("sln.logit_grad_noise_sigma", sln.logit_grad_noise_sigma, 0.0),
                            ("method.sam", config.method.sam, False), ("run.compile", run.compile, "none"),
                            ("run.record_probs", run.record_probs, False),
                            ("data.balanced_per_class", config.data.balanced_per_class, None),
                            ("optim.grad_clip", config.optim.grad_clip, None)):
        if value != off:
            problems.append(f"{key} does not combine with method dividemix (it runs its own MixMatch epoch); "
                            f"drop it")
    return problems


_SLN_REF = Reference("chenpf1025/SLN", "noise_cifar_train.py", "621c6c87138db09fdca66a7610b126ee4b265b74")
_NCE_RCE_REF = Reference("HanxunH/Active-Passive-Losses", "configs/cifar10/sym/nce+rce.yaml",
                     "2d18de6ba7665e2a4b83ed8bb88b32a05f70620d")  # cifar100/sym/nce+rce.yaml and trainer.py alike
_D2L_REF = Reference("xingjunm/dimensionality-driven-learning", "loss.py", "0935aab3f4281086d5d636dad881dfc60edcbd04")
_SOP_CONFIG = "shengliu66/SOP config_cifar100.json + README (lr_u 1, lr_v 10; the repo ships no CIFAR-10 config)"
_SOP_LR_U = Hyperparameter("lr_u", 10.0, 1.0, f"{_SOP_CONFIG}; CIFAR-10: 10, the value of noisypy's SOP configs (a "
                                              "third-party reproduction; the paper's Table A.1 was not read)",
                           _at_least(0.0))
_SOP_LR_V = _same("lr_v", 10.0, _SOP_CONFIG, _at_least(0.0))
# SOP: its u, v model the given labels' noise themselves, so label correction (which rewrites the targets) does not
# combine with it, SLN's sigma does; SAM's second backward would add a second gradient to u and v
_SOP_RULES = ("sln.sigma: SLN's noise on the targets SOP reads (the CE term's weights and the MSE term's target; "
              "u, v stay on the given label's one-hot mask); sln.correction: refused; --sam: refused; torchrun: "
              "each rank steps the u, v of its shard, the changes averaged over the ranks after each epoch")
_BASE = "sln_cli.methods."
# ELR: shengliu66/ELR ELR/config_cifar10_asym.json (commit 12d0b6c) has beta 0.9, lambda 1 for asymmetric noise;
# its config_cifar10.json (commit 2f4cd32) beta 0.7, lambda 3 for the others.
# NCE+RCE's official trainer clips the gradient norm at `grad_bound` = 5.0 in every config (trainer.py, configs/).
BUILTIN: tuple[MethodSpec, ...] = (
    MethodSpec("sln", "Chen et al., ICLR 2021", "Gaussian noise (sln.sigma) on the one-hot targets every step",
               True, reference=_SLN_REF, factory=_BASE + "base:SoftCrossEntropy"),
    MethodSpec("ce", "(baseline)", "plain cross-entropy: sln with sigma 0", True, reference=_SLN_REF,
               factory=_BASE + "base:SoftCrossEntropy"),
    MethodSpec("gce", "Zhang & Sabuncu, NeurIPS 2018 (truncated Lq; gce_k=0: plain Lq)",
               "truncated Lq: w_i·((1 - p_y^q)/q - (1 - k^q)/q), w_i = [Lq(p_y) < Lq(k)] re-scored every 10 epochs "
               "from epoch gce_prune_from; method.gce_k=0 is plain Lq (1 - p_y^q)/q",
               False, (_same("gce_q", 0.7, "Zhang & Sabuncu 2018, Sec. 4 (q = 0.7 on CIFAR); TruncatedLoss.py",
                             (0.0, 1.0, False, True)),
                       _same("gce_k", 0.5, "Zhang & Sabuncu 2018 (k = 0.5); TruncatedLoss.py; 0 = plain Lq",
                             _UNIT_OPEN_HIGH),
                       _same("gce_prune_from", 40, "main.py --start_prune 40 (weights re-scored every 10 epochs)",
                             _at_least(1))),
               Reference("AlanChou/Truncated-Loss", "TruncatedLoss.py", "93a24641b8d0c3216d8df53683eb1f3fdcbd80f8"),
               factory=_BASE + "gce:GeneralizedCrossEntropy"),
    MethodSpec("sce", "Wang et al., ICCV 2019", "loss alpha·CE + beta·reverse CE (log 0 clipped to log 1e-4)",
               True, (Hyperparameter("sce_alpha", 0.1, 6.0, "Wang et al. 2019, Sec. 4.1; train_models.py",
                                     _at_least(0.0)),
                      Hyperparameter("sce_beta", 1.0, 0.1, "Wang et al. 2019, Sec. 4.1; train_models.py",
                                     _at_least(0.0))),
               Reference("YisenWang/symmetric_cross_entropy_for_noisy_labels", "train_models.py",
                         "235d93b25fdaab0e106d6f8c782a03ec175f9bc1"), factory=_BASE + "sce:SymmetricCrossEntropy"),
    MethodSpec("nce-rce", "Ma et al., ICML 2020 (APL)",
               "loss alpha·normalised CE + beta·reverse CE; gradient norm clipped (optim.grad_clip, 5.0)", False,
               (Hyperparameter("nce_rce_alpha", 1.0, 10.0, "Ma et al. 2020, official code (Active-Passive-Losses)",
                               _at_least(0.0)),
                Hyperparameter("nce_rce_beta", 1.0, 0.1, "Ma et al. 2020, official code (Active-Passive-Losses)",
                               _at_least(0.0))),
               _NCE_RCE_REF, factory=_BASE + "nce_rce:NceRce", grad_clip=5.0),
    MethodSpec("ls", "Szegedy et al., CVPR 2016; Lukasik et al., ICML 2020",
               "target (1 - eps)·t + eps/K", True,
               (_same("smoothing", 0.1, "Szegedy et al. 2016 (eps = 0.1)", _UNIT),),
               Reference("YisenWang/symmetric_cross_entropy_for_noisy_labels", "loss.py",
                         "235d93b25fdaab0e106d6f8c782a03ec175f9bc1"), factory=_BASE + "smoothing:LabelSmoothing"),
    MethodSpec("bootstrap-soft", "Reed et al., ICLR 2015 workshop", "target beta·t + (1 - beta)·p (p not detached)",
               True, (_same("bootstrap_beta", 0.95, "Reed et al. 2015, Sec. 3 (soft: beta = 0.95)", _UNIT),),
               _D2L_REF, factory=_BASE + "bootstrap:SoftBootstrapping"),
    MethodSpec("bootstrap-hard", "Reed et al., ICLR 2015 workshop", "target beta·t + (1 - beta)·onehot(argmax p)",
               True, (_same("bootstrap_beta", 0.8, "Reed et al. 2015, Sec. 3 (hard: beta = 0.8)", _UNIT),),
               _D2L_REF, factory=_BASE + "bootstrap:HardBootstrapping"),
    MethodSpec("forward", "Patrini et al., CVPR 2017", "CE on softmax(z) @ T, T the label-noise transition matrix",
               True, (_same("forward_matrix", "labels",
                            "labels: the training labels' own T (true vs given); or a .npy/.csv; or a run "
                            "directory whose probs.npy estimates T (Patrini et al. 2017)"),
                      Hyperparameter("forward_anchor", "percentile", "argmax",
                                     "main_experiment.py: filter_outlier (97th-percentile anchor) except on "
                                     "CIFAR-100 (plain argmax)", choices=("percentile", "argmax"))),
               Reference("giorgiop/loss-correction", "main_experiment.py", "acfb9ab04696563ac2f5a64a1b1fd1824596344d"),
               factory=_BASE + "forward:ForwardCorrection"),
    MethodSpec("elr", "Liu et al., NeurIPS 2020", "CE + lambda·log(1 - <t_i, p>), t_i a per-sample EMA of p", True,
               (Hyperparameter("elr_lambda", 3.0, 7.0, "Liu et al. 2020, official configs (CIFAR-10 asym: 1)",
                               _at_least(0.0), by_noise=(("cifar10", "asym", 1.0),)),
                Hyperparameter("elr_beta", 0.7, 0.9, "Liu et al. 2020, official configs (CIFAR-10 asym: 0.9)",
                               _UNIT_OPEN_HIGH, by_noise=(("cifar10", "asym", 0.9),))),
               Reference("shengliu66/ELR", "ELR/config_cifar10_asym.json", "12d0b6cbacb1ceb1fdf45574b8e1b6962dd4582b"),
               factory=_BASE + "elr:EarlyLearningRegularization"),
    MethodSpec("coteaching", "Han et al., NeurIPS 2018",
               "two networks; each trains on the small-loss samples the other picks", False,
               (_same("forget_rate", None, "Han et al. 2018: the noise rate (default: the training labels' "
                                           "realised rate; open-set: the label set's stated fraction)",
                      _UNIT_OPEN_HIGH),
                _same("forget_epochs", 10, "Han et al. 2018 (T_k = 10)", _at_least(1))),
               Reference("bhanML/Co-teaching", "main.py", "07a0f57e58da28b9bd38f8bb3c01f6f7cfc3526e"),
               factory=_BASE + "coteaching:CoTeaching", settle=_BASE + "coteaching:settle"),
    MethodSpec("dividemix", "Li, Socher & Hoi, ICLR 2020",
               "two networks; a GMM on each one's losses divides the data for the other (co-divide); MixMatch on "
               "the labelled (co-refined) and unlabelled (co-guessed) parts; test on both networks' average", True,
               (Hyperparameter("warmup_epochs", 10, 30, f"{DIVIDEMIX_CODE} (warm_up)", _at_least(1)),
                _same("p_threshold", None, f"{DIVIDEMIX_CODE} (--p_threshold 0.5); Li et al. 2020, Sec. 4.1: "
                                           "0.6 at 90% noise", (0.0, 1.0, False, False)),
                _same("lambda_u", None, "Li et al. 2020, appendix: chosen per noise setting from {0, 25, 50, 150} "
                                        "(see docs/dividemix.md; settings it does not list: the nearest one)",
                      _at_least(0.0)),
                _same("mixmatch_alpha", 4.0, f"{DIVIDEMIX_CODE} (--alpha 4)", _above(0.0)),
                _same("sharpen_t", 0.5, f"{DIVIDEMIX_CODE} (--T 0.5)", _above(0.0)),
                _same("rampup_epochs", 16, f"{DIVIDEMIX_CODE} (linear_rampup, rampup_length=16)", _at_least(1)),
                _same("gmm_window", None, f"{DIVIDEMIX_CODE} (eval_train: the last 5 epochs' losses at r = 0.9, "
                                          "else 1)", _at_least(1)),
                _same("warmup_penalty", None, f"{DIVIDEMIX_CODE} (NegEntropy during warm-up for asym noise only)")),
               Reference("LiJunnan1992/DivideMix", "Train_CIFAR.py", DIVIDEMIX_COMMIT),
               factory=_BASE + "dividemix:DivideMix", display="DivideMix",
               combinations="sln.sigma adds SLN's Gaussian noise to the labelled targets after co-refinement and "
               "sharpening (before mixup), fresh each step; the warm-up and the unlabelled targets get none. Refused: "
               "sln.correction and the gradient-noise ablations, method.sam, run.compile, run.record_probs, "
               "data.balanced_per_class, optim.grad_clip. The EMA (-MO) follows the averaged pair of "
               "networks. Under torchrun the division is gathered over all ranks and the steps are sharded.",
               problems=_dividemix_problems, settle=_BASE + "dividemix_defaults:settle_dividemix"),
    MethodSpec("sop", "Liu, Zhu, Qu & You, ICML 2022",
               "prediction + u_i²⊙y_i − v_i²⊙(1−y_i) against y_i, plus an MSE fit of onehot(argmax p) + that to y_i; "
               "u, v per sample, own SGD (lr_u, lr_v)", True, (_SOP_LR_U, _SOP_LR_V),
               Reference("shengliu66/SOP", "model/loss.py", SOP_COMMIT),
               factory=_BASE + "sop:SparseOverParameterization", combinations=_SOP_RULES,
               refused_sln_keys=("correction",), sam=False),
    MethodSpec("sop-plus", "Liu, Zhu, Qu & You, ICML 2022 (SOP+)",
               "SOP + ratio_consistency·KL(weak ‖ AutoAugment view) + ratio_balance·KL(uniform ‖ mean prediction)",
               True, (_SOP_LR_U, _SOP_LR_V,
                      _same("ratio_consistency", 0.9, "shengliu66/SOP config_cifar100.json (train_loss.args)",
                            _at_least(0.0)),
                      _same("ratio_balance", 0.1, "shengliu66/SOP config_cifar100.json (train_loss.args)",
                            _at_least(0.0))),
               Reference("shengliu66/SOP", "model/loss.py", SOP_COMMIT),
               factory=_BASE + "sop:SparseOverParameterizationPlus",
               combinations=_SOP_RULES + "; file-backed datasets: refused (strong views need the images in memory)",
               refused_sln_keys=("correction",), sam=False),
)
METHODS: dict[str, MethodSpec] = {}
# Comma-separated modules imported with the registry, each calling `register`. Plugins may import torch: the registry
# stays torch-free only without them.
PLUGINS_ENV = "SLN_METHODS"


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry. Its hyperparameters must be keys of the config's `method` section (the flat
    `method.*` keys are a file format); a key another method shares must keep that method's bounds."""
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is registered twice")
    for h in spec.hyperparameters:
        if _CONFIG_KEYS and h.key not in _CONFIG_KEYS:
            raise ValueError(f"method {spec.name}: method.{h.key} is not a key of the config's method section")
        shared = _KEYS.get(h.key)
        if shared is not None and (shared.bounds, shared.choices) != (h.bounds, h.choices):
            raise ValueError(f"method {spec.name}: method.{h.key} has other bounds than in another method")
        _KEYS.setdefault(h.key, h)
    METHODS[spec.name] = spec
    return spec


_KEYS: dict[str, Hyperparameter] = {}
_CONFIG_KEYS: frozenset[str] = frozenset()  # empty while the built-in methods register
SAM_RHO = _same("sam_rho", 0.05, "Foret et al., ICLR 2021 (rho = 0.05 on CIFAR)", (0.0, None, False, True))
for _spec in BUILTIN:
    register(_spec)
_KEYS["sam_rho"] = SAM_RHO
# The config's `method` section is the built-in methods' keys (tests/test_methods_registry.py holds the two equal),
# read here rather than from config.py, which imports this module.
_CONFIG_KEYS = frozenset(_KEYS)
# SLN's own switches: (key, value that turns it off, whether it acts on the soft targets)
SLN_KEYS = (("sigma", 0.0, True), ("correction", None, True), ("grad_noise_sigma", 0.0, False),
            ("logit_grad_noise_sigma", 0.0, False))


def default(hyperparameter: Hyperparameter, dataset: str, noise_mode: str | None = None) -> Any:
    """The published default on `dataset`, for `noise_mode` where the method's authors set one per noise type."""
    for where, mode, value in hyperparameter.by_noise:
        if (where, mode) == (dataset, noise_mode or ""):
            return value
    return hyperparameter.cifar100 if dataset == "cifar100" else hyperparameter.cifar10


_OFFICIAL_MODE = re.compile(r"(?:^|[/_:-])(sym|asym|dependent|openset)\d")


def noise_mode(noise: Any) -> str:
    """The kind of noise a run trains on: `noise.mode`, or for a label file the kind its name says
    (the official files: official:cifar10/asym0.4, .../asym0.4.csv); '' when unknown."""
    if noise.labels:
        match = _OFFICIAL_MODE.search(str(noise.labels))
        return match[1] if match else ""
    return noise.mode


def display_name(method: str, sigma: float, *, ema: bool, correction: bool = False, sam: bool = False) -> str:
    """CE, SLN, SLN-MO, SLN-MO-LC as in the paper; any other method upper-cased, `-MO` for its EMA, `+SLN` with
    SLN's target noise (sigma > 0: `SOP+SLN` is not `SOP`), `+SAM`."""
    if method in ("sln", "ce"):
        base = "CE" if sigma == 0 else "SLN"
        name = ("SLN-MO-LC" if correction else "SLN-MO") if ema and base == "SLN" else base + ("-MO" if ema else "")
    elif method == "dividemix":  # DivideMix+SLN: SLN's noise on its labelled targets
        name = METHODS[method].display + ("+SLN" if sigma > 0 else "") + ("-MO" if ema else "")
    else:
        spec = METHODS.get(method)
        shown = spec.display if spec is not None and spec.display else method.upper()
        name = shown + ("-MO" if ema else "") + ("+SLN" if sigma > 0 else "")
    return name + ("+SAM" if sam else "")


def apply_method(config: Config, levels: dict[str, int], problems: list[str]) -> Config:
    """Fill the method's defaults, null the keys it does not use, and settle SLN's own switches.

    A key set at a lower level than `method.name` (a preset's sigma, when the command line picks `--method
    gce`) was chosen for another method: it is dropped. Set at the same level or above (levels: defaults,
    preset, command line), it is a request, kept when it makes sense with the method and refused otherwise.
    """
    method, name = config.method, config.method.name
    info, chosen = METHODS[name], levels.get("method.name", 0)

    def requested(key: str) -> bool:
        return levels.get(key, 0) >= chosen

    own = {h.key: h for h in info.hyperparameters} | ({"sam_rho": SAM_RHO} if method.sam else {})
    mode = noise_mode(config.noise)
    values: dict[str, Any] = {}
    for key in _all_keys():
        value = getattr(method, key)
        if key in own:
            values[key] = default(own[key], config.data.dataset, mode) if value is None else value
        elif value is not None:
            if requested(f"method.{key}"):
                problems.append(f"method.{key} is a setting of {_owners(key)}; method {name} does not use it")
            values[key] = None
    problems += _range_problems(values)
    sln: dict[str, Any] = {}
    for key, off, on_targets in SLN_KEYS if name != "sln" else ():
        value = getattr(config.sln, key)
        if value == off:
            continue
        if not requested(f"sln.{key}"):
            sln[key] = off  # the preset chose it for SLN, not for this method
        elif name == "ce" and key == "sigma":
            problems.append("sln.sigma must be 0 with method ce (plain cross-entropy); SLN's noise is --method sln")
        elif on_targets and not info.soft_targets:
            problems.append(f"sln.{key} acts on soft targets, but method {name}'s loss takes hard labels; "
                            f"drop it or use a method that takes soft targets")
        elif key in info.refused_sln_keys:
            problems.append(f"sln.{key} does not combine with method {name}: its u, v model the given labels' noise "
                            f"themselves; drop it (sln.sigma does combine)")
    if method.sam and not info.sam:
        problems.append(f"method.sam does not combine with method {name} (its per-sample u, v would take two "
                        "gradients per step); drop --sam")
    if info.problems is not None:
        problems += info.problems(config)
    if method.sam and config.run.precision == "fp16":
        problems.append("method.sam does not work with fp16's gradient scaler; use --precision bf16 or fp32")
    optim = config.optim
    if info.grad_clip is not None and optim.grad_clip is None:
        optim = dataclasses.replace(optim, grad_clip=info.grad_clip)
    return dataclasses.replace(config, method=dataclasses.replace(method, **values),
                               sln=dataclasses.replace(config.sln, **sln), optim=optim)


def _all_keys() -> list[str]:
    return list(_KEYS)  # every method's keys in registry order, then sam_rho


def _owners(key: str) -> str:
    if key == "sam_rho":
        return "SAM (method.sam=true)"
    return " and ".join(info.name for info in METHODS.values() if any(h.key == key for h in info.hyperparameters))


def _range_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    for key, value in values.items():
        spec = _KEYS[key]
        if value is not None and spec.choices and value not in spec.choices:
            problems.append(f"method.{key} must be one of {', '.join(spec.choices)}, got {value!r}")
        if value is None or spec.bounds is None:
            continue
        low, high, low_in, high_in = spec.bounds
        below = value < low if low_in else value <= low
        above = high is not None and (value > high if high_in else value >= high)
        if below or above:
            span = f"{'[' if low_in else '('}{low}, {'inf' if high is None else high}{']' if high_in else ')'}"
            problems.append(f"method.{key} must be in {span}, got {value}")
    return problems


def settings_of(method: MethodConfig) -> dict[str, Any]:
    """The hyperparameters a resolved method section uses (its non-null keys)."""
    return {key: value for key, value in dataclasses.asdict(method).items()
            if key not in ("name", "sam") and value is not None}


def describe(dataset: str) -> list[dict[str, Any]]:
    """One row per method: its paper, what it changes, and the hyperparameters it uses on `dataset`."""
    rows = []
    for info in [*METHODS.values()]:
        rows.append({"name": info.name, "paper": info.paper, "changes": info.changes,
                     "sln_noise": info.soft_targets and info.name != "ce",
                     "hyperparameters": {h.key: {"value": _shown(default(h, dataset), h.key),
                                                 "source": _source(h, dataset)} for h in info.hyperparameters},
                     "combinations": info.combinations,
                     "reference": None if info.reference is None else dataclasses.asdict(info.reference)})
    rows.append({"name": "sam (method.sam=true)", "paper": "Foret et al., ICLR 2021",
                 "changes": "optimiser: gradient taken at w + rho·g/|g| (two passes per step); with any method "
                            "but dividemix",
                 "sln_noise": True, "hyperparameters": {"sam_rho": {"value": SAM_RHO.cifar10,
                                                                    "source": SAM_RHO.source}},
                 "combinations": "every method but dividemix", "reference": None})
    return rows


def _shown(value: Any, key: str = "") -> Any:
    if value is None:
        return "the noise rate" if key == "forget_rate" else "per noise setting"
    return value


def _source(hyperparameter: Hyperparameter, dataset: str) -> str:
    if hyperparameter.cifar10 == hyperparameter.cifar100 or dataset in ("cifar10", "cifar100"):
        return hyperparameter.source
    return f"{hyperparameter.source}; the CIFAR-10 value (none published for {dataset})"


plugins.load(PLUGINS_ENV)  # $SLN_METHODS: methods defined outside sln_cli (docs/method.md, "Adding a method")
