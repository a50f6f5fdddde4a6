"""Training configuration, read from YAML into dataclasses and saved inside every checkpoint.

Every value is checked against its field's type annotation (:func:`checked_fields`), so a wrong
type is one error line naming the key, the value and the type expected.
"""

from __future__ import annotations

import contextlib
import math
import re
import reprlib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from keyfer.data.augment import AugmentConfig
from keyfer.data.datasets import training_splits
from keyfer.errors import KeyferError
from keyfer.nkf.config import ModelConfig

REGULARIZATIONS = ("none", "augment", "consistency")


@dataclass
class TrainConfig:
    """How a model is trained. ``regularization``: KF regularization by landmark perturbation,
    ``augment`` (classify from perturbed landmarks with probability ``perturb_prob``) or
    ``consistency`` (cross-entropy at the perturbed landmarks + ``consistency_weight`` x the
    symmetric KL between clean and perturbed predictions); ``sigma`` is in IOD units.

    ``engine``: ``cached`` trains the head on Keypoint-Feature caches (frozen FaceMesh, minutes on
    a CPU); ``images`` trains on augmented images, FaceMesh included when the model config says
    ``finetune_alignment``, at ``alignment_lr``, with ``distill_weight`` x the mean squared drift of
    its mesh from the original FaceMesh's (in crop widths) so that the landmarks stay right.
    ``init_from`` starts from a checkpoint's head (e.g. one trained on caches, or on AffectNet-8
    for RAF-DB or FERPlus), in either engine; ``init_classifier: false`` keeps the output layer
    out of it, so the classifier starts anew on the loaded body (a new head for a new dataset).
    ``balanced_sampler`` draws every class equally often (both engines). ``augmentation``
    overrides fields of :class:`keyfer.data.augment.AugmentConfig` for the image engine (e.g.
    ``{rotation: 15, erase_prob: 0.5}``). A model's appearance branch, when fine-tuned
    (``model.finetune_appearance``, image engine), trains at ``appearance_lr`` and stays frozen
    for the first ``appearance_freeze_epochs`` epochs.

    ``num_workers``: data-loading processes of the image engine (and of building its crop cache).
    ``bf16``: bf16 autocast for training on CUDA (ignored on the CPU, which trains in float32).
    ``compile``: ``torch.compile`` the networks (CUDA only; an error on the CPU). Under
    ``torchrun`` each process trains on its share of every global batch of ``batch_size``."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    label_mode: str = "majority"
    label_smoothing: float = 0.0
    regularization: str = "consistency"
    sigma: float = 0.05
    perturb_prob: float = 0.5
    consistency_weight: float = 1.0
    mirror: bool = True
    balanced_sampler: bool = False
    seed: int = 0
    engine: str = "cached"
    alignment_lr: float = 1e-4
    distill_weight: float = 1.0
    init_from: str | None = None
    init_classifier: bool = True
    augment: bool = True
    augmentation: dict[str, Any] = field(default_factory=dict)
    appearance_lr: float = 1e-4
    appearance_freeze_epochs: int = 0
    num_workers: int = 1
    bf16: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.regularization not in REGULARIZATIONS:
            raise KeyferError(f"bad train config: regularization must be one of {REGULARIZATIONS}")
        if self.label_mode not in ("majority", "probability"):
            raise KeyferError("bad train config: label_mode must be majority or probability")
        if self.engine not in ("cached", "images"):
            raise KeyferError("bad train config: engine must be cached or images")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise KeyferError("bad train config: epochs, batch_size and lr must be positive")
        known = {f.name for f in fields(AugmentConfig)} - {"flip"}
        unknown = set(self.augmentation) - known
        if unknown:
            raise KeyferError(
                f"bad train config: unknown augmentation keys {sorted(unknown)}; "
                f"choose from {sorted(known)} (flip is train.mirror)"
            )
        self.augmentation = checked_fields(AugmentConfig, self.augmentation, "train.augmentation.")
        if self.appearance_lr <= 0 or self.appearance_freeze_epochs < 0:
            raise KeyferError(
                "bad train config: appearance_lr must be positive and "
                "appearance_freeze_epochs not negative"
            )


@dataclass
class Experiment:
    """A whole run: ``model`` and ``train`` settings plus the data it uses. ``dataset`` is a name
    of :data:`keyfer.data.datasets.DATASETS` with train and evaluation splits, at ``root`` (its
    root as distributed; a relative root is under the ``KEYFER_DATA`` folder when that is set,
    else under the current folder: :func:`keyfer.data.roots.data_root`). ``train_subset`` keeps
    that many training images (a fixed random subset, for quick runs); Keypoint-Feature caches go
    under ``cache_dir``, and the image engine's prepared-crop caches under ``cache_dir/crops``."""

    name: str = "run"
    dataset: str = "ferplus"
    root: str = "ferplus"
    train_subset: int | None = None
    cache_dir: str = ".cache/kf"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        training_splits(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Experiment:
        """The experiment of a config mapping (a YAML file's or a checkpoint's), with its
        ``model`` and ``train`` sections; every value is checked (:func:`checked_fields`)."""
        return cls(**checked_fields(cls, data, ""))


CONFIGS_DIR = Path(__file__).parents[1] / "configs"
"""The configs shipped with keyfer, one YAML file per recipe."""


def shipped_configs() -> dict[str, Path]:
    """Name -> path of each config shipped with keyfer (``ferplus``, ``quick``, ...), sorted."""
    return {path.stem: path for path in sorted(CONFIGS_DIR.glob("*.yaml"))}


def config_summary(path: Path) -> str:
    """What a config is for: its leading comment up to the first colon or full stop."""
    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.removeprefix("#").strip())
    return re.split(r"[:.](?:\s|$)", " ".join(comment), maxsplit=1)[0]


def find_config(config: str | Path) -> Path:
    """The config file a ``keyfer train`` argument names: a shipped config's bare name
    (``quick``: no folder and no suffix), or else a YAML file's path."""
    text = str(config)
    if Path(text).name != text or Path(text).suffix:
        return Path(text)
    shipped = shipped_configs()
    if text not in shipped:
        raise KeyferError(
            f"no shipped config {text!r}; choose from {', '.join(shipped)}, or give a YAML path"
        )
    return shipped[text]


def load_experiment(path: str | Path, overrides: list[str] = ()) -> Experiment:
    """Read a UTF-8 YAML config and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as error:
        raise KeyferError(f"cannot read config {path}: {error}") from error
    except yaml.YAMLError as error:
        raise KeyferError(f"cannot read config {path}: {_yaml_problem(error)}") from error
    for override in overrides:
        _apply_override(data, override)
    return Experiment.from_dict(data)


def _apply_override(data: Any, override: str) -> None:
    """Set the value of a ``--set`` ``key.sub=value`` (the value parsed as YAML) in ``data``,
    creating missing sections."""
    key, sep, text = override.partition("=")
    if not sep:
        raise KeyferError(f"bad --set {override!r}; use key=value, e.g. train.epochs=5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = _yaml_problem(error)
        raise KeyferError(f"bad --set {override!r}: the value is not YAML: {problem}") from error
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        section = ".".join(parents) or "the config"
        raise KeyferError(f"bad --set {override!r}: {section} is not a section of keys")
    node[leaf] = value


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML parse error in one line: what is wrong and, when known, on which line."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} on line {mark.line + 1}" if mark is not None else problem


def checked_fields(cls: type, data: Any, prefix: str) -> dict[str, Any]:
    """``data``, the config section of dataclass ``cls``, with each value checked against its
    field's type annotation and converted as :func:`_checked` does. ``prefix`` (``""``,
    ``"train."``) names the section in the one-line :class:`KeyferError` raised for a section
    that is not a mapping, an unknown key or a value of the wrong type."""
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "the config"
        raise KeyferError(
            f"bad config: {section} must be a mapping of keys, not {reprlib.repr(data)}"
        )
    names = {f.name for f in fields(cls)}
    unknown = sorted(f"{prefix}{key}" for key in data if key not in names)
    if unknown:
        raise KeyferError(f"bad config: unknown keys {unknown}")
    hints = get_type_hints(cls)
    return {key: _checked(f"{prefix}{key}", value, hints[key]) for key, value in data.items()}


def _checked(key: str, value: Any, expected: Any) -> Any:
    """``value`` as a value of type annotation ``expected``, converted only where nothing is
    lost: an int to a float, a float without a fraction to an int, a list to a tuple, a mapping
    to a dataclass (checked in turn), text YAML 1.1 leaves unparsed (``1e-4``) to a float.
    A bool is never a number, floats must be finite, and ``Any`` takes anything."""
    origin, args = get_origin(expected), get_args(expected)
    if expected is Any:
        return value
    if origin in (Union, UnionType):
        for option in args:
            with contextlib.suppress(KeyferError):
                return _checked(key, value, option)
    elif is_dataclass(expected):
        return expected(**checked_fields(expected, value, f"{key}."))
    elif origin is list and isinstance(value, list):
        return [_checked(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value)]
    elif origin is tuple and isinstance(value, list | tuple) and len(value) == len(args):
        items = enumerate(zip(value, args, strict=True))
        return tuple(_checked(f"{key}[{i}]", item, arg) for i, (item, arg) in items)
    elif origin is dict and isinstance(value, dict):
        return {
            _checked(key, name, args[0]): _checked(f"{key}.{name}", item, args[1])
            for name, item in value.items()
        }
    elif expected is float:
        number = _finite_float(value)
        if number is not None:
            return number
    elif expected is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif origin is None and isinstance(value, expected):  # str, bool, None
        return value
    raise KeyferError(
        f"bad config: {key} = {reprlib.repr(value)} ({type(value).__name__}); "
        f"expected {_type_name(expected)}"
    )


def _finite_float(value: Any) -> float | None:
    """An int, a float or a number's text as a finite float; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _type_name(annotation: Any) -> str:
    """``int``, ``str | None``, ``list[int]``: a type annotation as it is written."""
    if annotation is float:
        return "a finite float"
    if isinstance(annotation, type) and not get_args(annotation):
        return "None" if annotation is NoneType else annotation.__name__
    return str(annotation).replace("NoneType", "None").replace("typing.", "")
