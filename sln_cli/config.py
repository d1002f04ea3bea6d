"""The configuration schema (frozen dataclasses) and its resolution: defaults < preset < --set < flags.

A preset is a YAML delta over the defaults; unknown keys and wrong types are refused, all problems at
once, each naming its key. The resolved config, written to a run directory, is itself a valid preset.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sln_cli import seeds
from sln_cli.data import registry as data_registry
from sln_cli.errors import SlnError
from sln_cli.rundir import yamlfile

NoiseMode = Literal["none", "sym", "uniform", "asym", "asym-superclass", "transition", "dependent", "idn", "openset"]


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"  # a registered dataset reader (sln_cli/data/registry.py; docs/guides/datasets.md)
    data_dir: str | None = None  # folder holding the dataset; default data/CIFAR10, data/CIFAR100, data/Clothing1M, ...
    download: bool = False  # fetch the official archive (with its checksum) when missing
    train_limit: int | None = None  # seeded subset of the training set, after the label file is applied
    test_limit: int | None = None  # seeded subset of the test set
    padding: int = 4  # random-crop zero padding in pixels (CIFAR: 4); 0 turns cropping off
    flip: bool = True  # random horizontal flip with probability 0.5
    # file-backed datasets, in pixels: shorter side before cropping, and the crop. null: the dataset's own size
    # (`sln_cli.data.sizing`): 256/224 for photos, an image folder's own side when its images are smaller than 224
    resize: int | None = None
    crop: int | None = None
    balanced_per_class: int | None = None  # fresh class-balanced draw each epoch (Clothing1M: 18,976)
    workers: int = 4  # DataLoader workers for file-backed datasets
    gpu_decode: bool = False  # file-backed datasets: decode JPEGs on the GPU with nvJPEG (on CUDA; else workers)
    noisy_val: float | None = None  # hold out this many noisy training samples (a count, or a fraction < 1)
    noisy_val_seed: int = 0  # seed of that split, apart from run.seed: every method and seed holds out the same
    noisy_val_select: Literal["ema", "raw"] = "ema"  # which network's noisy-validation accuracy picks best.pt


@dataclass(frozen=True)
class NoiseConfig:
    mode: NoiseMode = "none"  # generated on the fly from the clean labels (ignored when `labels` is set)
    rate: float = 0.0  # requested noise rate r in [0, 1]
    seed: int = 0  # seed of the label noise, independent of the training seed
    exact: bool = False  # sym/uniform: flip exactly round(r*N) samples
    labels: str | None = None  # a label file (CSV or CIFAR-N .pt) instead of generated noise; official[:NAME]
    label_set: str | None = None  # CIFAR-N: worse_label, aggre_label, random_label1, noisy_label, ...
    matrix: str | None = None  # asym/transition: K×K row-stochastic matrix (.npy or .csv)
    probs: str | None = None  # dependent: N×K averaged softmax (.npy) or a run directory with probs.npy
    source_dataset: str | None = None  # openset: dataset whose images replace ours
    source_data_dir: str | None = None  # openset: where it lives (default: data.data_dir)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "wrn-28-2"  # a registered model: wrn-28-2 (any wrn-D-W), preact-resnet18, resnet50, vgg19-bn, cnn, mlp
    weights: str | None = None  # resnet50: "imagenet" (torchvision download) or a local state-dict file


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 300  # training epochs (the paper's CIFAR setting: 300)
    batch_size: int = 128  # images per step, per process under torchrun
    lr: float = 0.001  # constant on CIFAR (official code)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay (L2)
    lr_milestones: tuple[int, ...] = ()  # epochs after which lr *= lr_gamma (Clothing1M: after epoch 5)
    lr_gamma: float = 0.1  # factor applied to lr at each of lr_milestones
    reset_each_epoch: bool = False  # re-create the optimiser every epoch, momentum from zero (official IDN recipe)
    grad_clip: float | None = None  # clip the gradient's global L2 norm to this before each step; null = never
    lr_schedule: Literal["step", "cosine"] = "step"  # cosine: lr_min + (lr - lr_min)(1 + cos(pi (e-1)/epochs))/2
    lr_min: float = 0.0  # cosine's floor (torch CosineAnnealingLR's eta_min, T_max = epochs)


@dataclass(frozen=True)
class SlnConfig:
    sigma: float = 1.0  # std of the Gaussian noise added to the one-hot targets each step; 0 = plain CE
    correction: int | None = None  # LC: epochs after this one use corrected targets and sigma 0 (CIFAR: 250)
    correction_augment: bool = True  # the official LC pass runs with the training augmentation on
    correction_target: Literal["argmax", "softmax"] = "argmax"  # CIFAR: argmax; Clothing1M: softmax
    grad_noise_sigma: float = 0.0  # ablation (paper Eq. 1): Gaussian noise on the parameter gradient
    logit_grad_noise_sigma: float = 0.0  # ablation (paper Eq. 2): Gaussian noise on dLoss/dlogits


@dataclass(frozen=True)
class EmaConfig:
    decay: float = 0.999  # the momentum model (-MO): weight EMA, BatchNorm buffers included (was sln.ema_decay)


MethodName = str  # a name in the method registry (sln_cli/methods/catalog.py: METHODS), checked by `resolve`


@dataclass(frozen=True)
class MethodConfig:
    """The training method (`sln methods` lists them). null hyperparameters take the method's per-dataset
    default when the config is resolved; a resolved config holds the values used, and null for keys the
    method does not use."""

    name: MethodName = "sln"  # a registered method (`sln methods`): sln (the sln section), ce (sigma 0), a baseline
    gce_q: float | None = None  # GCE exponent q in (0, 1]
    gce_k: float | None = None  # truncated GCE threshold k in [0, 1); 0 = plain Lq (no truncation)
    gce_prune_from: int | None = None  # truncated GCE: first epoch whose start re-scores the weights (then every 10)
    sce_alpha: float | None = None  # SCE weight of the CE term
    sce_beta: float | None = None  # SCE weight of the reverse-CE term
    nce_rce_alpha: float | None = None  # NCE+RCE weight of the NCE term (was method.apl_alpha)
    nce_rce_beta: float | None = None  # NCE+RCE weight of the RCE term (was method.apl_beta)
    smoothing: float | None = None  # label smoothing epsilon in [0, 1]
    bootstrap_beta: float | None = None  # bootstrapping: weight of the given label in [0, 1]
    forward_matrix: str | None = None  # forward correction: labels (the labels' own T), a K×K .npy/.csv, or a run dir
    forward_anchor: str | None = None  # T from a run's probs.npy: percentile (97th, filter_outlier) or argmax
    elr_lambda: float | None = None  # ELR regulariser weight
    elr_beta: float | None = None  # ELR target momentum in [0, 1)
    forget_rate: float | None = None  # co-teaching: final fraction of large-loss samples dropped (the noise rate)
    forget_epochs: int | None = None  # co-teaching: T_k, epochs over which the forget rate ramps up
    lr_u: float | None = None  # SOP: SGD learning rate of the per-sample u (no momentum, no decay, constant)
    lr_v: float | None = None  # SOP: SGD learning rate of the per-sample v
    ratio_consistency: float | None = None  # SOP+: weight of KL(weak view's prediction ‖ strong view's)
    ratio_balance: float | None = None  # SOP+: weight of KL(uniform ‖ the batch's mean prediction)
    warmup_epochs: int | None = None  # dividemix: epochs of plain CE before the first division (CIFAR-10: 10)
    p_threshold: float | None = None  # dividemix: clean probability above which a sample is labelled, in (0, 1)
    lambda_u: float | None = None  # dividemix: weight of the unlabelled MSE after its ramp-up (per noise setting)
    mixmatch_alpha: float | None = None  # dividemix: mixup's Beta(alpha, alpha)
    sharpen_t: float | None = None  # dividemix: sharpening temperature T
    rampup_epochs: int | None = None  # dividemix: epochs over which lambda_u ramps up linearly after the warm-up
    gmm_window: int | None = None  # dividemix: epochs of normalised losses averaged before the GMM fit
    warmup_penalty: bool | None = None  # dividemix: negative-entropy penalty during warm-up (default: asym noise)
    sam: bool = False  # sharpness-aware minimisation (two passes per step) on top of the method
    sam_rho: float | None = None  # SAM neighbourhood radius (L2)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # training seed: initialisation, shuffling, augmentation, label noise of SLN
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16 uses a gradient scaler
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPUs and tensor-core GPUs
    out: str | None = None  # run directory (default runs/<preset>-<timestamp>)
    record_probs: bool = False  # save the per-sample softmax averaged over epochs (probs.npy)
    # batch: train-mode softmax of each training batch (cheap); eval: the official IDN recipe's eval-mode pass over
    # the training set after every epoch, with the training augmentation, in dataset order
    record_probs_mode: Literal["batch", "eval"] = "batch"
    checkpoint_every: int = 1  # epochs between resumable checkpoints
    keep_checkpoints: int = 0  # also keep every Nth epoch's weights (checkpoints/epoch-XXXX.pt); 0 = none
    eval_batch_size: int = 1024  # images per forward pass when evaluating, correcting labels or recording probs
    compile: Literal["none", "compile"] = "none"  # torch.compile the forward (one GPU: with CUDA graphs)
    sync_batchnorm: bool = False  # distributed: SyncBatchNorm across ranks
    cpu_threads: int = 0  # intra-op CPU threads (torch.set_num_threads); 0 = PyTorch's default
    memory_check: bool = True  # refuse, before training, a model × input × batch the device's memory cannot hold
    deterministic: bool = True  # same numbers for the same seed on the same kind of device; false: cuDNN benchmark
    tensorboard: bool = False  # also write TensorBoard event files in RUN/tensorboard (extra sln-cli[tensorboard])
    keep_state_at: tuple[int, ...] = ()  # also keep the full resumable state after these epochs (LC branching)


@dataclass(frozen=True)
class Config:
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sln: SlnConfig = field(default_factory=SlnConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    run: RunConfig = field(default_factory=RunConfig)


# --------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------


def resolve(
    preset: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    flags: dict[str, Any] | None = None,
) -> Config:
    """Build the config: defaults < `preset` (a YAML delta) < `--set k=v` overrides < named `flags`.

    `flags` maps dotted keys (`optim.epochs`) to values; None values are ignored (flag not given).
    """
    problems: list[str] = []
    preset = upgrade(preset or {}, problems)
    flags = {ALIASES.get(key, key): value for key, value in (flags or {}).items()}
    tree = _merge(to_dict(Config()), preset, problems, where="preset")
    for item in overrides:
        key, value = _parse_override(item)
        tree = _merge(tree, _nest(key, value), problems, where="--set")
    for key, value in (flags or {}).items():
        if value is not None:
            tree = _merge(tree, _nest(key, value), problems, where="flag")
    config = _build(tree, problems)
    from sln_cli.methods.catalog import METHODS

    if config.method.name not in METHODS:
        problems.append(_choice_problem("method.name", config.method.name, tuple(METHODS)))
    if not problems:  # the method's defaults and which sln keys it keeps depend on who set what
        from sln_cli.methods.catalog import apply_method

        config = apply_method(config, _levels(preset or {}, overrides, flags or {}), problems)
    problems += validate(config) if not problems else []
    if problems:
        more = f"; and {len(problems) - 10} more problems" if len(problems) > 10 else ""
        raise SlnError("; ".join(problems[:10]) + more)
    return config


# Old key -> its key now. The old one keeps working wherever a key is given (presets, --set, flags, sweep grids, a
# run's config.yaml on --resume, `report` grouping old runs with new ones) and means the same.
ALIASES = {"sln.ema_decay": "ema.decay", "method.apl_alpha": "method.nce_rce_alpha",
           "method.apl_beta": "method.nce_rce_beta"}


def upgrade(tree: dict[str, Any], problems: list[str] | None = None) -> dict[str, Any]:
    """A config tree (preset, config.yaml) with old keys moved to their new place; both given with different
    values is a problem (or the new key's value is kept when `problems` is None)."""
    moved = tree
    for old, new in ALIASES.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section = moved.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        value = section[old_key]
        moved = {**moved, old_section: {k: v for k, v in section.items() if k != old_key}}
        target = dict(moved[new_section]) if isinstance(moved.get(new_section), dict) else {}
        if new_key in target and target[new_key] != value and problems is not None:
            problems.append(f"{old} is the old name of {new}; give one of them")
        target.setdefault(new_key, value)
        moved[new_section] = target
    return moved


def _levels(preset: dict[str, Any], overrides: Sequence[str], flags: dict[str, Any]) -> dict[str, int]:
    """Dotted key -> who set it: 1 the preset, 2 the command line (--set or a flag); unset keys are 0."""
    levels = {f"{section}.{key}": 1 for section, values in preset.items() if isinstance(values, dict)
              for key in values}
    levels |= {_parse_override(item)[0]: 2 for item in overrides}
    return levels | {key: 2 for key, value in flags.items() if value is not None}


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), as written to config.yaml."""

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    tree = dataclasses.asdict(config)
    return {k: ({kk: plain(vv) for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in tree.items()}


def dump(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def load_yaml(path: Path, *, what: str = "preset") -> dict[str, Any]:
    tree = yamlfile.load(path, what=what)  # safe, size-capped, alias expansion bounded
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise SlnError(f"{path} must hold a mapping of sections (data:, noise:, ...), not a {type(tree).__name__}")
    return tree


def validate(config: Config) -> list[str]:
    """Cross-field checks that types alone cannot express; returns every problem found."""
    problems = []
    noise, optim, sln, data = config.noise, config.optim, config.sln, config.data
    value: Any  # the checks below go over ints and floats alike
    if not 0.0 <= noise.rate <= 1.0:
        problems.append(f"noise.rate must be in [0, 1], got {noise.rate}")
    for key, value in [("optim.epochs", optim.epochs), ("optim.batch_size", optim.batch_size)]:
        if value < 1:
            problems.append(f"{key} must be at least 1, got {value}")
    for key, value in [("optim.lr", optim.lr), ("sln.sigma", sln.sigma), ("optim.weight_decay", optim.weight_decay),
                       ("optim.lr_min", optim.lr_min)]:
        if value < 0:
            problems.append(f"{key} must not be negative, got {value}")
    if not 0.0 <= config.ema.decay < 1.0:
        problems.append(f"ema.decay (sln.ema_decay) must be in [0, 1), got {config.ema.decay}")
    if sln.correction is not None and sln.correction < 1:  # the official code, too, treats 0 as "never"
        problems.append(f"sln.correction must be an epoch number >= 1 (null turns correction off), "
                        f"got {sln.correction}")
    elif sln.correction is not None and sln.correction >= optim.epochs:
        # correction starts after epoch `correction`: at or past the last epoch the run would never correct
        problems.append(f"sln.correction ({sln.correction}) must be below optim.epochs ({optim.epochs}): label "
                        "correction starts after that epoch, so this run would never correct; lower it or drop it")
    if optim.grad_clip is not None and not optim.grad_clip > 0:
        problems.append(f"optim.grad_clip must be a positive gradient norm (null: no clipping), got {optim.grad_clip}")
    for key, value in [("data.train_limit", data.train_limit), ("data.test_limit", data.test_limit)]:
        if value is not None and value < 1:
            problems.append(f"{key} must be at least 1, got {value}")
    run = config.run
    for key, value in [("run.eval_batch_size", run.eval_batch_size), ("data.crop", data.crop),
                       ("data.balanced_per_class", data.balanced_per_class)]:
        if value is not None and value < 1:
            problems.append(f"{key} must be at least 1, got {value}")
    for key, value in [("data.padding", data.padding), ("data.workers", data.workers),
                       ("optim.momentum", optim.momentum), ("run.keep_checkpoints", run.keep_checkpoints),
                       ("run.cpu_threads", run.cpu_threads), ("sln.grad_noise_sigma", sln.grad_noise_sigma),
                       ("sln.logit_grad_noise_sigma", sln.logit_grad_noise_sigma)]:
        if value < 0:
            problems.append(f"{key} must not be negative, got {value}")
    if data.noisy_val is not None and (data.noisy_val <= 0 or (data.noisy_val > 1 and data.noisy_val % 1)):
        problems.append(f"data.noisy_val must be a count >= 1 or a fraction in (0, 1), got {data.noisy_val:g}")
    if data.resize is not None and data.resize < 1:
        problems.append(f"data.resize must be at least 1, got {data.resize}")
    if data.crop is not None and data.resize is not None and data.crop > data.resize:
        problems.append(f"data.crop ({data.crop}) must not exceed data.resize ({data.resize})")
    if any(epoch < 1 for epoch in run.keep_state_at):
        problems.append(f"run.keep_state_at takes epoch numbers >= 1, got {list(run.keep_state_at)}")
    if config.data.dataset not in data_registry.REGISTRY:
        problems.append(_choice_problem("data.dataset", config.data.dataset, tuple(data_registry.REGISTRY)))
    if config.run.checkpoint_every < 1:
        problems.append(f"run.checkpoint_every must be at least 1, got {config.run.checkpoint_every}")
    return problems + _bound_problems(config)


# Values that reach torch unchecked past here: bounded so that a typo is an error, not an overflow mid-run.
MAX_LR = 100.0  # the paper's rates are 0.001-0.02; SGD overflows long before 1e308
MAX_CPU_THREADS = 4096  # and at most the machine's cores, checked where the run starts (train.check_threads)


def _bound_problems(config: Config) -> list[str]:
    problems = [p for p in (seeds.seed_problem(config.run.seed, "run.seed"),
                            seeds.seed_problem(config.noise.seed, "noise.seed")) if p]
    for key, value, high in [("optim.lr", config.optim.lr, MAX_LR),
                             ("optim.weight_decay", config.optim.weight_decay, 1.0),
                             ("optim.momentum", config.optim.momentum, 1.0), ("sln.sigma", config.sln.sigma, 100.0)]:
        if not math.isfinite(value) or value > high:
            problems.append(f"{key} must be a finite number of at most {high:g}, got {value}")
    if config.run.cpu_threads > MAX_CPU_THREADS:
        problems.append(f"run.cpu_threads must be at most {MAX_CPU_THREADS} (0: torch's default), "
                        f"got {config.run.cpu_threads}")
    return problems


# --------------------------------------------------------------------------------------------------
# Internals: merging YAML trees and typing their leaves
# --------------------------------------------------------------------------------------------------


def _merge(base: dict[str, Any], delta: dict[str, Any], problems: list[str], where: str) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in delta.items():
        if key not in merged:
            problems.append(f"unknown {where} key {_show(key)}{_hint(key, merged)}")
        elif isinstance(merged[key], dict):
            if not isinstance(value, dict):
                problems.append(f"{where} key {_show(key)} must be a mapping of settings, got {_show(value)}")
                continue
            for sub, subvalue in value.items():
                if sub not in merged[key]:
                    problems.append(f"unknown {where} key '{key}.{sub}'{_hint(sub, merged[key], prefix=key + '.')}")
                else:
                    merged[key][sub] = subvalue
        else:
            merged[key] = value
    return merged


_SHORT_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 3, 4, 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 40


def _show(value: Any, limit: int = 80) -> str:
    """A value for an error message: a bounded repr (never walks a huge or deeply shared value), cut short."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _hint(key: str, choices: dict[str, Any], prefix: str = "") -> str:
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    return f"; valid keys: {', '.join(prefix + c for c in choices)}"


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or "." not in key:
        raise SlnError(f"--set takes section.key=value (e.g. --set optim.lr=0.01), got {_show(item)}")
    # text that is not YAML is the plain string it is (a path with a colon); a value is a few nodes at most
    value = yamlfile.loads(text, what=f"--set {key}", max_nodes=1000, invalid_as_text=True) if text.strip() else None
    return ALIASES.get(key.strip(), key.strip()), value


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    section, _, key = dotted.partition(".")
    return {section: {key: value}} if key else {section: value}


def _build(tree: dict[str, Any], problems: list[str]) -> Config:
    hints = typing.get_type_hints(Config)
    kwargs: dict[str, Any] = {}
    for name, value in tree.items():
        if name == "description":
            kwargs[name] = "" if value is None else str(value)
            continue
        section = hints[name]
        section_hints = typing.get_type_hints(section)
        kwargs[name] = section(
            **{k: _coerce(v, section_hints[k], f"{name}.{k}", problems) for k, v in value.items()}
        )
    return Config(**kwargs)


def _choice_problem(key: str, value: Any, choices: tuple[Any, ...]) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in choices], n=1)
    hint_text = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{key} must be one of {', '.join(map(str, choices))}; got {_show(value)}{hint_text}"


def _coerce(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    """Check `value` against a field's type, converting only the lossless cases (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key, problems)
    if origin is Literal:
        if value not in args:
            problems.append(_choice_problem(key, value, args))
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            problems.append(f"{key} must be a list, got {_show(value)}")
            return ()
        return tuple(_coerce(v, args[0], key, problems) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            problems.append(f"{key} must be a finite number, got an integer of {len(str(abs(value)))} digits")
            return 0.0
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{key} must be a finite number, got {value}")  # nan/inf would start a run that dies
        return 0.0
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        problems.append(f"{key} must be {hint.__name__}, got {_show(value)}")
    return value
