"""Training configuration, read from YAML into dataclasses and saved inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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
        if self.appearance_lr <= 0 or self.appearance_freeze_epochs < 0:
            raise KeyferError(
                "bad train config: appearance_lr must be positive and "
                "appearance_freeze_epochs not negative"
            )


@dataclass
class Experiment:
    """A whole run: ``model`` and ``train`` settings plus the data it uses. ``dataset`` is a name
    of :data:`keyfer.data.datasets.DATASETS` with train and evaluation splits, at ``root`` (its
    root as distributed). ``train_subset`` keeps that many training images (a fixed random
    subset, for quick runs); Keypoint-Feature caches go under ``cache_dir``, and the image
    engine's prepared-crop caches under ``cache_dir/crops``."""

    name: str = "run"
    dataset: str = "ferplus"
    root: str = "../shared/data/ferplus"
    train_subset: int | None = None
    cache_dir: str = ".cache/kf"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        training_splits(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise KeyferError(f"bad config: unknown keys {sorted(unknown)}")
        try:
            return cls(
                **{k: v for k, v in data.items() if k not in ("model", "train")},
                model=ModelConfig(**data.get("model", {})),
                train=TrainConfig(**data.get("train", {})),
            )
        except TypeError as error:
            raise KeyferError(f"bad config: {error}") from error


def load_experiment(path: str | Path, overrides: list[str] = ()) -> Experiment:
    """Read a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise KeyferError(f"cannot read config {path}: {error}") from error
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise KeyferError(f"bad --set {override!r}; use key=value, e.g. train.epochs=5")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return Experiment.from_dict(data)
