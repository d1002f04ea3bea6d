"""The methods `sln train --method NAME` offers: paper, what each changes, hyperparameters with per-dataset
defaults and their sources; and the rules that resolve a config's `method` section and refuse combinations
that make no sense. Torch-free: the config and the CLI read it without importing torch.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sln_cli.config import Config, MethodConfig


@dataclass(frozen=True)
class Hyperparameter:
    key: str  # under `method.`
    cifar10: Any  # default on CIFAR-10, and on every dataset without a published value of its own
    cifar100: Any  # default on CIFAR-100
    source: str  # where the defaults come from


@dataclass(frozen=True)
class Reference:
    repository: str  # official code, "owner/name"
    file: str  # the file the defaults and formulas were checked against
    commit: str  # the commit read


@dataclass(frozen=True)
class MethodInfo:
    name: str
    paper: str
    changes: str  # what the method changes in the training step, in a few words
    soft_targets: bool  # its loss reads soft targets, so SLN's target noise (and label correction) can apply
    hyperparameters: tuple[Hyperparameter, ...] = ()
    reference: Reference | None = None


DIVIDEMIX_COMMIT = "39740b267147466bac0779de91d969909ab3b65f"
DIVIDEMIX_CODE = "official code, Train_CIFAR.py"


def _same(key: str, value: Any, source: str) -> Hyperparameter:
    return Hyperparameter(key, value, value, source)


_SLN_REF = Reference("chenpf1025/SLN", "noise_cifar_train.py", "621c6c87138db09fdca66a7610b126ee4b265b74")
_APL_REF = Reference("HanxunH/Active-Passive-Losses", "configs/cifar10/sym/nce+rce.yaml",
                     "2d18de6ba7665e2a4b83ed8bb88b32a05f70620d")  # cifar100/sym/nce+rce.yaml and trainer.py alike
_D2L_REF = Reference("xingjunm/dimensionality-driven-learning", "loss.py", "0935aab3f4281086d5d636dad881dfc60edcbd04")

METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    MethodInfo("sln", "Chen et al., ICLR 2021", "Gaussian noise (sln.sigma) on the one-hot targets every step",
               True, reference=_SLN_REF),
    MethodInfo("ce", "(baseline)", "plain cross-entropy: sln with sigma 0", True, reference=_SLN_REF),
    MethodInfo("gce", "Zhang & Sabuncu, NeurIPS 2018 (truncated Lq; gce_k=0: plain Lq)",
               "truncated Lq: w_i·((1 - p_y^q)/q - (1 - k^q)/q), w_i = [Lq(p_y) < Lq(k)] re-scored every 10 epochs "
               "from epoch gce_prune_from; method.gce_k=0 is plain Lq (1 - p_y^q)/q",
               False, (_same("gce_q", 0.7, "Zhang & Sabuncu 2018, Sec. 4 (q = 0.7 on CIFAR); TruncatedLoss.py"),
                       _same("gce_k", 0.5, "Zhang & Sabuncu 2018 (k = 0.5); TruncatedLoss.py; 0 = plain Lq"),
                       _same("gce_prune_from", 40, "main.py --start_prune 40 (weights re-scored every 10 epochs)")),
               Reference("AlanChou/Truncated-Loss", "TruncatedLoss.py", "93a24641b8d0c3216d8df53683eb1f3fdcbd80f8")),
    MethodInfo("sce", "Wang et al., ICCV 2019", "loss alpha·CE + beta·reverse CE (log 0 clipped to log 1e-4)",
               True, (Hyperparameter("sce_alpha", 0.1, 6.0, "Wang et al. 2019, Sec. 4.1; train_models.py"),
                      Hyperparameter("sce_beta", 1.0, 0.1, "Wang et al. 2019, Sec. 4.1; train_models.py")),
               Reference("YisenWang/symmetric_cross_entropy_for_noisy_labels", "train_models.py",
                         "235d93b25fdaab0e106d6f8c782a03ec175f9bc1")),
    MethodInfo("nce-rce", "Ma et al., ICML 2020 (APL)",
               "loss alpha·normalised CE + beta·reverse CE; gradient norm clipped (optim.grad_clip, 5.0)", False,
               (Hyperparameter("apl_alpha", 1.0, 10.0, "Ma et al. 2020, official code (Active-Passive-Losses)"),
                Hyperparameter("apl_beta", 1.0, 0.1, "Ma et al. 2020, official code (Active-Passive-Losses)")),
               _APL_REF),
    MethodInfo("ls", "Szegedy et al., CVPR 2016; Lukasik et al., ICML 2020",
               "target (1 - eps)·t + eps/K", True, (_same("smoothing", 0.1, "Szegedy et al. 2016 (eps = 0.1)"),),
               Reference("YisenWang/symmetric_cross_entropy_for_noisy_labels", "loss.py",
                         "235d93b25fdaab0e106d6f8c782a03ec175f9bc1")),
    MethodInfo("bootstrap-soft", "Reed et al., ICLR 2015 workshop", "target beta·t + (1 - beta)·p (p not detached)",
               True, (_same("bootstrap_beta", 0.95, "Reed et al. 2015, Sec. 3 (soft: beta = 0.95)"),), _D2L_REF),
    MethodInfo("bootstrap-hard", "Reed et al., ICLR 2015 workshop", "target beta·t + (1 - beta)·onehot(argmax p)",
               True, (_same("bootstrap_beta", 0.8, "Reed et al. 2015, Sec. 3 (hard: beta = 0.8)"),), _D2L_REF),
    MethodInfo("forward", "Patrini et al., CVPR 2017", "CE on softmax(z) @ T, T the label-noise transition matrix",
               True, (_same("forward_matrix", "labels",
                            "labels: the training labels' own T (true vs given); or a .npy/.csv; or a run "
                            "directory whose probs.npy estimates T (Patrini et al. 2017)"),
                      Hyperparameter("forward_anchor", "percentile", "argmax",
                                     "main_experiment.py: filter_outlier (97th-percentile anchor) except on "
                                     "CIFAR-100 (plain argmax)")),
               Reference("giorgiop/loss-correction", "main_experiment.py", "acfb9ab04696563ac2f5a64a1b1fd1824596344d")),
    MethodInfo("elr", "Liu et al., NeurIPS 2020", "CE + lambda·log(1 - <t_i, p>), t_i a per-sample EMA of p", True,
               (Hyperparameter("elr_lambda", 3.0, 7.0, "Liu et al. 2020, official configs (CIFAR-10 asym: 1)"),
                Hyperparameter("elr_beta", 0.7, 0.9, "Liu et al. 2020, official configs (CIFAR-10 asym: 0.9)")),
               Reference("shengliu66/ELR", "ELR/config_cifar10_asym.json", "12d0b6cbacb1ceb1fdf45574b8e1b6962dd4582b")),
    MethodInfo("coteaching", "Han et al., NeurIPS 2018",
               "two networks; each trains on the small-loss samples the other picks", False,
               (_same("forget_rate", None, "Han et al. 2018: the noise rate (default: the training labels' "
                                           "realised rate; open-set: the label set's stated fraction)"),
                _same("forget_epochs", 10, "Han et al. 2018 (T_k = 10)")),
               Reference("bhanML/Co-teaching", "main.py", "07a0f57e58da28b9bd38f8bb3c01f6f7cfc3526e")),
    MethodInfo("dividemix", "Li, Socher & Hoi, ICLR 2020",
               "two networks; a GMM on each one's losses divides the data for the other (co-divide); MixMatch on "
               "the labelled (co-refined) and unlabelled (co-guessed) parts; test on both networks' average", True,
               (Hyperparameter("warmup_epochs", 10, 30, f"{DIVIDEMIX_CODE} (warm_up)"),
                _same("p_threshold", None, f"{DIVIDEMIX_CODE} (--p_threshold 0.5); Li et al. 2020, Sec. 4.1: "
                                           "0.6 at 90% noise"),
                _same("lambda_u", None, "Li et al. 2020, appendix: chosen per noise setting from {0, 25, 50, 150} "
                                        "(see docs/dividemix.md; settings it does not list: the nearest one)"),
                _same("mixmatch_alpha", 4.0, f"{DIVIDEMIX_CODE} (--alpha 4)"),
                _same("sharpen_t", 0.5, f"{DIVIDEMIX_CODE} (--T 0.5)"),
                _same("rampup_epochs", 16, f"{DIVIDEMIX_CODE} (linear_rampup, rampup_length=16)"),
                _same("gmm_window", None, f"{DIVIDEMIX_CODE} (eval_train: the last 5 epochs' losses at r = 0.9, "
                                          "else 1)"),
                _same("warmup_penalty", None, f"{DIVIDEMIX_CODE} (NegEntropy during warm-up for asym noise only)")),
               Reference("LiJunnan1992/DivideMix", "Train_CIFAR.py", DIVIDEMIX_COMMIT)),
]}
# Published defaults for one noise type, over the per-dataset ones: (method, key, dataset, noise mode) -> value.
# ELR: shengliu66/ELR ELR/config_cifar10_asym.json (commit 12d0b6c) has beta 0.9, lambda 1 for asymmetric noise;
# its config_cifar10.json (commit 2f4cd32) beta 0.7, lambda 3 for the others.
NOISE_DEFAULTS: dict[tuple[str, str, str, str], Any] = {
    ("elr", "elr_lambda", "cifar10", "asym"): 1.0, ("elr", "elr_beta", "cifar10", "asym"): 0.9,
}
# NCE+RCE's official trainer clips the gradient norm at `grad_bound` = 5.0 in every config (trainer.py, configs/)
METHOD_GRAD_CLIP = {"nce-rce": 5.0}
CHOICES = {"forward_anchor": ("percentile", "argmax")}
SOP_COMMIT = "4d991cedf1fafec98f858a213ccc31e52318a77f"  # shengliu66/SOP, the commit read (2022-09-14)
_SOP_CONFIG = "shengliu66/SOP config_cifar100.json + README (lr_u 1, lr_v 10; the repo ships no CIFAR-10 config)"
_SOP_LR_U = Hyperparameter("lr_u", 10.0, 1.0, f"{_SOP_CONFIG}; CIFAR-10: 10, the value of noisypy's SOP configs (a "
                                              "third-party reproduction; the paper's Table A.1 was not read)")
_SOP_LR_V = _same("lr_v", 10.0, _SOP_CONFIG)
METHODS |= {m.name: m for m in [
    MethodInfo("sop", "Liu, Zhu, Qu & You, ICML 2022",
               "prediction + u_i²⊙y_i − v_i²⊙(1−y_i) against y_i, plus an MSE fit of onehot(argmax p) + that to y_i; "
               "u, v per sample, own SGD (lr_u, lr_v)", True, (_SOP_LR_U, _SOP_LR_V),
               Reference("shengliu66/SOP", "model/loss.py", SOP_COMMIT)),
    MethodInfo("sop-plus", "Liu, Zhu, Qu & You, ICML 2022 (SOP+)",
               "SOP + ratio_consistency·KL(weak ‖ AutoAugment view) + ratio_balance·KL(uniform ‖ mean prediction)",
               True, (_SOP_LR_U, _SOP_LR_V,
                      _same("ratio_consistency", 0.9, "shengliu66/SOP config_cifar100.json (train_loss.args)"),
                      _same("ratio_balance", 0.1, "shengliu66/SOP config_cifar100.json (train_loss.args)")),
               Reference("shengliu66/SOP", "model/loss.py", SOP_COMMIT)),
]}
# SLN's switches a method refuses although its loss reads soft targets: SOP's u, v model the given labels' noise
# themselves, so label correction (which rewrites the targets) does not combine with it; SLN's sigma does.
REFUSED_SLN_KEYS = {"sop": ("correction",), "sop-plus": ("correction",)}
NO_SAM = ("sop", "sop-plus")  # SAM's second backward would add a second gradient to u and v
_SOP_RULES = ("sln.sigma: SLN's noise on the targets SOP reads (the CE term's weights and the MSE term's target; "
              "u, v stay on the given label's one-hot mask); sln.correction: refused; --sam: refused; torchrun: "
              "each rank steps the u, v of its shard, the changes averaged over the ranks after each epoch")
COMBINATIONS = {  # how SLN (and SAM) combine with a method, where it is more than the `soft_targets` rule
    "sop": _SOP_RULES,
    "sop-plus": _SOP_RULES + "; file-backed datasets: refused (strong views need the images in memory)",
}
SAM_RHO = _same("sam_rho", 0.05, "Foret et al., ICLR 2021 (rho = 0.05 on CIFAR)")
# SLN's own switches: (key, value that turns it off, whether it acts on the soft targets)
SLN_KEYS = (("sigma", 0.0, True), ("correction", None, True), ("grad_noise_sigma", 0.0, False),
            ("logit_grad_noise_sigma", 0.0, False))
RANGES = {  # key -> (low, high, low inclusive, high inclusive); None: unbounded
    "gce_q": (0.0, 1.0, False, True), "smoothing": (0.0, 1.0, True, True), "bootstrap_beta": (0.0, 1.0, True, True),
    "elr_beta": (0.0, 1.0, True, False), "forget_rate": (0.0, 1.0, True, False), "sam_rho": (0.0, None, False, True),
    "sce_alpha": (0.0, None, True, True), "sce_beta": (0.0, None, True, True), "apl_alpha": (0.0, None, True, True),
    "apl_beta": (0.0, None, True, True), "elr_lambda": (0.0, None, True, True), "forget_epochs": (1, None, True, True),
    "gce_k": (0.0, 1.0, True, False), "gce_prune_from": (1, None, True, True),
    "lr_u": (0.0, None, True, True), "lr_v": (0.0, None, True, True), "ratio_consistency": (0.0, None, True, True),
    "ratio_balance": (0.0, None, True, True),
    "p_threshold": (0.0, 1.0, False, False), "lambda_u": (0.0, None, True, True),
    "mixmatch_alpha": (0.0, None, False, True), "sharpen_t": (0.0, None, False, True),
    "warmup_epochs": (1, None, True, True), "rampup_epochs": (1, None, True, True), "gmm_window": (1, None, True, True),
}


def default(hyperparameter: Hyperparameter, dataset: str, noise_mode: str | None = None, method: str = "") -> Any:
    """The published default on `dataset`, for `noise_mode` where the method's authors set one per noise type."""
    by_noise = NOISE_DEFAULTS.get((method, hyperparameter.key, dataset, noise_mode or ""), _NONE)
    if by_noise is not _NONE:
        return by_noise
    return hyperparameter.cifar100 if dataset == "cifar100" else hyperparameter.cifar10


_NONE = object()
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
        name = "DivideMix" + ("+SLN" if sigma > 0 else "") + ("-MO" if ema else "")
    else:
        name = method.upper() + ("-MO" if ema else "") + ("+SLN" if sigma > 0 else "")
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
            values[key] = default(own[key], config.data.dataset, mode, name) if value is None else value
        elif value is not None:
            if requested(f"method.{key}"):
                problems.append(f"method.{key} is a setting of {_owners(key)}; method {name} does not use it")
            values[key] = None
    problems += _range_problems(values)
    sln = {}
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
        elif key in REFUSED_SLN_KEYS.get(name, ()):
            problems.append(f"sln.{key} does not combine with method {name}: its u, v model the given labels' noise "
                            f"themselves; drop it (sln.sigma does combine)")
    if method.sam and name in NO_SAM:
        problems.append(f"method.sam does not combine with method {name} (its per-sample u, v would take two "
                        "gradients per step); drop --sam")
    if name == "dividemix":
        problems += _dividemix_problems(config)
    if method.sam and config.run.precision == "fp16":
        problems.append("method.sam does not work with fp16's gradient scaler; use --precision bf16 or fp32")
    optim = config.optim
    if name in METHOD_GRAD_CLIP and optim.grad_clip is None:
        optim = dataclasses.replace(optim, grad_clip=METHOD_GRAD_CLIP[name])
    return dataclasses.replace(config, method=dataclasses.replace(method, **values),
                               sln=dataclasses.replace(config.sln, **sln), optim=optim)


# How DivideMix combines with SLN and the harness's switches (`sln methods` lists them).
COMBINATIONS |= {
    "dividemix": "sln.sigma adds SLN's Gaussian noise to the labelled targets after co-refinement and sharpening "
                 "(before mixup), fresh each step; the warm-up and the unlabelled targets get none. Refused: "
                 "sln.correction and the gradient-noise ablations, method.sam, run.compile, run.record_probs, "
                 "data.balanced_per_class, optim.grad_clip. The EMA (-MO) follows the averaged pair of "
                 "networks. Under torchrun the division is gathered over all ranks and the steps are sharded.",
}


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


def _all_keys() -> list[str]:
    keys = [h.key for info in METHODS.values() for h in info.hyperparameters] + ["sam_rho"]
    return list(dict.fromkeys(keys))


def _owners(key: str) -> str:
    if key == "sam_rho":
        return "SAM (method.sam=true)"
    return " and ".join(info.name for info in METHODS.values() if any(h.key == key for h in info.hyperparameters))


def _range_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    for key, value in values.items():
        if value is not None and key in CHOICES and value not in CHOICES[key]:
            problems.append(f"method.{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
        if value is None or key not in RANGES:
            continue
        low, high, low_in, high_in = RANGES[key]
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
                     "combinations": COMBINATIONS.get(info.name),
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
