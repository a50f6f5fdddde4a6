"""Training configuration, read from YAML into dataclasses and saved inside every checkpoint.

Every value is checked against its field's type annotation (:func:`checked_fields`), so a wrong
type is one error line naming the key, the value and the type expected. A config of an older key
layout (:data:`CONFIG_VERSION`), a YAML file's or a checkpoint's, is migrated when read
(:func:`migrate_config`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import reprlib
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from keyfer.data.augment import AugmentConfig
from keyfer.data.datasets import dataset_spec, training_splits
from keyfer.data.labels import FACES_MODES
from keyfer.errors import KeyferError
from keyfer.nkf.config import ModelConfig

REGULARIZATIONS = ("none", "augment", "consistency")

CONFIG_VERSION = 2
"""The layout of experiment configs, saved in each as ``config_version``. Version 1 (keyfer 0.2.0
and before, written without the key) had the image engine's settings at ``train.*`` and its
augmentation in two keys, ``train.augment`` (on or off) and ``train.augmentation`` (overrides);
:func:`migrate_config` moves them into ``train.images``."""

_IMAGE_KEYS_OF_VERSION_1 = (
    "alignment_lr",
    "distill_weight",
    "appearance_lr",
    "appearance_freeze_epochs",
    "num_workers",
)
RENAMED_KEYS = {
    "train.augment": "train.images.augment",
    "train.augmentation": "train.images.augment",
    **{f"train.{key}": f"train.images.{key}" for key in _IMAGE_KEYS_OF_VERSION_1},
}
"""Each config key of version 1 that version 2 moved -> its new key."""

log = logging.getLogger(__name__)


@dataclass
class ImagesConfig:
    """The image engine's settings (``train.images``; the cached engine reads only
    ``appearance_lr``, when it fine-tunes dlib's upper levels).

    ``augment``: the augmentation of the training crops, a mapping of overrides of
    :class:`keyfer.data.augment.AugmentConfig`'s fields (e.g. ``{rotation: 15, erase_prob: 0.5}``;
    ``{}`` or ``true``: its defaults; the flip is ``train.mirror``), or ``false`` for none.
    A fine-tuned FaceMesh (``model.finetune_alignment``) trains at ``alignment_lr``, with
    ``distill_weight`` x the mean squared drift of its mesh from the original FaceMesh's (in crop
    widths) so that the landmarks stay right. A fine-tuned appearance branch
    (``model.finetune_appearance``) trains at ``appearance_lr`` and stays frozen for the first
    ``appearance_freeze_epochs`` epochs. ``num_workers``: data-loading processes (also those that
    build the crop cache)."""

    augment: dict[str, Any] | bool = field(default_factory=dict)
    alignment_lr: float = 1e-4
    distill_weight: float = 1.0
    appearance_lr: float = 1e-4
    appearance_freeze_epochs: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if self.augment is True:
            self.augment = {}  # one spelling of the defaults, so that configs compare equal
        if isinstance(self.augment, dict):
            known = {f.name for f in fields(AugmentConfig)} - {"flip"}
            unknown = set(self.augment) - known
            if unknown:
                raise KeyferError(
                    f"bad train config: unknown train.images.augment keys {sorted(unknown)}; "
                    f"choose from {sorted(known)} (flip is train.mirror)"
                )
            self.augment = checked_fields(AugmentConfig, self.augment, "train.images.augment.")
        if self.appearance_lr <= 0 or self.appearance_freeze_epochs < 0:
            raise KeyferError(
                "bad train config: train.images.appearance_lr must be positive and "
                "train.images.appearance_freeze_epochs not negative"
            )

    def augment_config(self, mirror: bool) -> AugmentConfig | None:
        """The augmentation of the training crops (flipped when ``mirror``); None without one."""
        if not isinstance(self.augment, dict):
            return None  # false (true became {} when read)
        return AugmentConfig(flip=mirror, **self.augment)


@dataclass
class TrainConfig:
    """How a model is trained: the keys of both engines here, the image engine's own in
    ``images`` (:class:`ImagesConfig`).

    ``regularization``: KF regularization by landmark perturbation, ``augment`` (classify from
    perturbed landmarks with probability ``perturb_prob``) or ``consistency`` (cross-entropy at
    the perturbed landmarks + ``consistency_weight`` x the symmetric KL between clean and
    perturbed predictions); ``sigma`` is in IOD units.

    ``engine``: ``cached`` trains the head on Keypoint-Feature caches (frozen FaceMesh, minutes on
    a CPU; with ``model.finetune_appearance`` also dlib's levels after level3, on cached level3
    maps: :mod:`keyfer.train.upper_levels`); ``images`` trains on augmented images, FaceMesh
    included when the model config says ``finetune_alignment``. Both train with AdamW and a
    one-cycle schedule peaking at ``lr`` (:mod:`keyfer.train.loop`). ``init_from`` starts from a
    checkpoint's head (e.g. one trained on caches, or on AffectNet-8 for RAF-DB or FERPlus), in
    either engine;
    ``init_classifier: false`` keeps the output layer out of it, so the classifier starts anew on
    the loaded body (a new head for a new dataset). ``balanced_sampler`` draws every class
    equally often (both engines; with several sources, each source's classes equally often within
    its share of the draws: :mod:`keyfer.train.sampler`).

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
    init_from: str | None = None
    init_classifier: bool = True
    bf16: bool = True
    compile: bool = False
    images: ImagesConfig = field(default_factory=ImagesConfig)

    def __post_init__(self) -> None:
        if self.regularization not in REGULARIZATIONS:
            raise KeyferError(f"bad train config: regularization must be one of {REGULARIZATIONS}")
        if self.label_mode not in ("majority", "probability"):
            raise KeyferError("bad train config: label_mode must be majority or probability")
        if self.engine not in ("cached", "images"):
            raise KeyferError("bad train config: engine must be cached or images")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise KeyferError("bad train config: epochs, batch_size and lr must be positive")


@dataclass
class Source:
    """One source of training data: split ``split`` of ``dataset`` (a name of
    :data:`keyfer.data.datasets.DATASETS` with train and evaluation splits) at ``root`` (its root
    as distributed; a relative root is under the ``KEYFER_DATA`` folder when that is set, else
    under the current folder: :func:`keyfer.data.roots.data_root`), scored every epoch on its
    ``eval_split``. The splits default to the dataset's own (:func:`training_splits`) and are
    written in when read, so a saved config names them.

    ``faces``: how the faces of its images are found (one of
    :data:`~keyfer.data.labels.FACES_MODES`; None: the dataset's own). ``weight``: its share of
    the sampler's draws, relative to the other sources' weights (:mod:`keyfer.train.sampler`).
    ``train_subset`` keeps that many of its training images (a fixed random subset, for quick
    runs). ``name``: its name in the log and the metrics (default: the dataset's)."""

    dataset: str
    root: str
    split: str | None = None
    eval_split: str | None = None
    faces: str | None = None
    weight: float = 1.0
    train_subset: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        train_split, eval_split = training_splits(self.dataset)
        self.split = self.split or train_split
        self.eval_split = self.eval_split or eval_split
        splits = dataset_spec(self.dataset).splits
        for key, split in (("split", self.split), ("eval_split", self.eval_split)):
            if split not in splits:
                raise KeyferError(
                    f"bad config: {self.dataset} has no {key} {split!r}; choose from "
                    f"{', '.join(splits)}"
                )
        if self.split == self.eval_split or "all" in (self.split, self.eval_split):
            raise KeyferError(
                f"bad config: a {self.dataset} source must not be scored on images it trains on "
                f"(split {self.split}, eval_split {self.eval_split})"
            )
        if self.faces is not None and self.faces not in FACES_MODES:
            raise KeyferError(
                f"bad config: faces {self.faces!r}; choose from {', '.join(FACES_MODES)}"
            )
        if self.weight <= 0 or (self.train_subset is not None and self.train_subset < 1):
            raise KeyferError("bad config: a source's weight and train_subset must be positive")
        self.name = self.name or self.dataset


@dataclass
class Experiment:
    """A whole run: ``model`` and ``train`` settings plus the data it uses, ``sources``
    (:class:`Source`), each trained on and scored on its own. A config of one source may give
    it as ``dataset``, ``root`` and ``train_subset`` instead (keyfer 0.2.0's form; ``root``
    defaults to the dataset's name, the dataset to ``ferplus``), which become its one source
    when read. Keypoint-Feature caches go under ``cache_dir``, and the image engine's
    prepared-crop caches under ``cache_dir/crops``. ``config_version`` is the layout of its keys
    (:data:`CONFIG_VERSION`); an older config is migrated when read (:func:`migrate_config`)."""

    config_version: int = CONFIG_VERSION
    name: str = "run"
    sources: list[Source] = field(default_factory=list)
    dataset: str | None = None
    root: str | None = None
    train_subset: int | None = None
    cache_dir: str = ".cache/kf"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.config_version != CONFIG_VERSION:
            raise KeyferError(
                f"bad config: config_version {self.config_version} is not this keyfer's layout "
                f"({CONFIG_VERSION}); read older configs with Experiment.from_dict"
            )
        one_source = (self.dataset, self.root, self.train_subset)
        if not self.sources:
            dataset = self.dataset or "ferplus"
            root = self.root or dataset
            self.sources = [Source(dataset, root, train_subset=self.train_subset)]
        elif any(value is not None for value in one_source):
            raise KeyferError(
                "bad config: give sources, or one source as dataset, root and train_subset, "
                "not both"
            )
        self.dataset = self.root = self.train_subset = None  # all in sources now
        names = [str(source.name) for source in self.sources]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise KeyferError(
                f"bad config: sources named {', '.join(twice)} twice; give each "
                "source of the same dataset a name"
            )

    def with_sources(self, **changes: Any) -> Experiment:
        """This experiment with ``changes`` (e.g. ``faces="detect"``) made to every source."""
        return replace(self, sources=[replace(source, **changes) for source in self.sources])

    def to_dict(self) -> dict[str, Any]:
        """The config mapping (the one-source keys left out: :attr:`sources` holds them)."""
        one_source = ("dataset", "root", "train_subset")
        return {key: value for key, value in asdict(self).items() if key not in one_source}

    @classmethod
    def from_dict(cls, data: Any) -> Experiment:
        """The experiment of a config mapping (a YAML file's or a checkpoint's), with its
        ``model`` and ``train`` sections, migrated to :data:`CONFIG_VERSION`
        (:func:`migrate_config`); every value is checked (:func:`checked_fields`)."""
        return cls(**checked_fields(cls, migrate_config(data), ""))


def migrate_config(data: Any) -> Any:
    """Config mapping ``data`` in the layout of :data:`CONFIG_VERSION` (a new mapping; anything
    but a mapping is returned as it is, for :func:`checked_fields` to report).

    A version-1 config (no ``config_version``) gets its keys of :data:`RENAMED_KEYS` moved, with
    one logged note naming them: ``train.augment: false`` becomes ``train.images.augment: false``,
    else ``train.augmentation``'s overrides become ``train.images.augment``. An old key given
    beside its new one, or a version this keyfer does not know, is one :class:`KeyferError` line.
    """
    if not isinstance(data, dict):
        return data
    version = _checked("config_version", data.get("config_version", 1), int)
    if not 1 <= version <= CONFIG_VERSION:
        raise KeyferError(
            f"bad config: config_version {version}; this keyfer reads versions 1 to "
            f"{CONFIG_VERSION}: upgrade keyfer to read it"
        )
    data = {**data, "config_version": CONFIG_VERSION}
    if version == 1 and isinstance(data.get("train"), dict):
        data["train"] = _train_of_version_1(data["train"])
    return data


def _train_of_version_1(train: dict[str, Any]) -> dict[str, Any]:
    """A version-1 ``train`` section in version 2's layout (see :func:`migrate_config`)."""
    old = [f"train.{key}" for key in train if f"train.{key}" in RENAMED_KEYS]
    images = train.get("images", {})
    if not old or not isinstance(images, dict):
        return train  # nothing to move, or a bad train.images for checked_fields to report
    train = dict(train)
    moved = {key: train.pop(key) for key in _IMAGE_KEYS_OF_VERSION_1 if key in train}
    if "augment" in train or "augmentation" in train:
        augment, overrides = train.pop("augment", True), train.pop("augmentation", {})
        moved["augment"] = overrides if augment is True else augment
    both = sorted(f"train.images.{key}" for key in moved if key in images)
    if both:
        raise KeyferError(
            f"bad config: {', '.join(both)} given twice, under its old key too "
            f"({', '.join(old)} are keyfer 0.2.0's); keep the train.images one"
        )
    train["images"] = {**moved, **images}
    log.warning(
        "a config of version 1 (keyfer 0.2.0 and before): read %s (docs/training.md)",
        ", ".join(f"{key} as {RENAMED_KEYS[key]}" for key in old),
    )
    return train


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


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    """Read a UTF-8 YAML config, migrate it to :data:`CONFIG_VERSION` (:func:`migrate_config`)
    and apply ``key.sub=value`` overrides (values parsed as YAML; keys of the current layout)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as error:
        raise KeyferError(f"cannot read config {path}: {error}") from error
    except yaml.YAMLError as error:
        raise KeyferError(f"cannot read config {path}: {_yaml_problem(error)}") from error
    data = migrate_config(data)
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
    that is not a mapping, an unknown or missing key or a value of the wrong type."""
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "the config"
        raise KeyferError(
            f"bad config: {section} must be a mapping of keys, not {reprlib.repr(data)}"
        )
    names = {f.name for f in fields(cls)}
    unknown = sorted(f"{prefix}{key}" for key in data if key not in names)
    if unknown:
        moved = [f"{key} is now {RENAMED_KEYS[key]}" for key in unknown if key in RENAMED_KEYS]
        raise KeyferError(
            f"bad config: unknown keys {unknown}{'; ' if moved else ''}{', '.join(moved)}"
        )
    required = [
        f.name for f in fields(cls) if MISSING is f.default and MISSING is f.default_factory
    ]
    missing = [f"{prefix}{name}" for name in required if name not in data]
    if missing:
        raise KeyferError(f"bad config: missing keys {missing}")
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
    elif isinstance(expected, type) and is_dataclass(expected):
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
    text = str(annotation).replace("NoneType", "None").replace("typing.", "")
    return text.replace(f"{__name__}.", "")  # list[Source], not list[keyfer.train.config.Source]
