"""The NKF model's configuration: every component can be switched for ablations (docs/method.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyfer.errors import KeyferError
from keyfer.faces.dlib_resnet import TAPS as APPEARANCE_TAPS
from keyfer.faces.facemesh import TAP_STRIDES
from keyfer.nkf.appearance import DEFAULT_TAPS as DEFAULT_APPEARANCE_TAPS
from keyfer.nkf.rkfa import RKFA_FORMS

KEYPOINT_SETS = ("ibug68", "mesh468")
HEADS = ("concat", "mean", "attention")
COLOR_MODES = ("gray3", "rgb")
APPEARANCE_MODES = ("none", "global", "keypoints", "both")
APPEARANCE_GLOBAL = ("join", "replace")


@dataclass
class ModelConfig:
    """Architecture of an NKF model.

    ``keypoints``: ``ibug68``, ``mesh468``, or a list of mesh vertex indices that includes the
    nasal base (vertex 2). ``taps``: strides whose maps are sampled. ``use_keypoint_features`` and
    ``use_global`` switch the two feature kinds (global = the mean-pooled stride-32 tap).
    ``dim``: width of each projected token. ``rkfa``: none, channel, keypoint or both.
    ``head``: concat (keeps keypoint identity), mean, or attention pooling over tokens.
    ``finetune_alignment``: train FaceMesh too (at ``train.images.alignment_lr``).
    ``color_mode``: gray3 (gray replicated to 3 channels, for FERPlus) or rgb.

    The appearance branch (dlib's face-recognition ResNet, :mod:`keyfer.nkf.appearance`):
    ``appearance`` none, ``global`` (its pooled 256-d feature), ``keypoints`` (its Keypoint
    Features from ``appearance_taps``, joined to each FaceMesh token) or ``both``;
    ``appearance_global`` join (beside FaceMesh's global feature) or replace (instead of it);
    ``finetune_appearance`` trains the branch too (at ``train.images.appearance_lr``): all of it
    in the image engine, its levels after level3 in the cached engine
    (:mod:`keyfer.train.upper_levels`).
    """

    keypoints: str | list[int] = "ibug68"
    taps: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    use_keypoint_features: bool = True
    use_global: bool = True
    dim: int = 64
    rkfa: str = "keypoint"
    head: str = "concat"
    hidden: int = 512
    dropout: float = 0.3
    num_classes: int = 8
    finetune_alignment: bool = False
    color_mode: str = "gray3"
    appearance: str = "none"
    appearance_taps: list[str] = field(default_factory=lambda: list(DEFAULT_APPEARANCE_TAPS))
    appearance_global: str = "join"
    finetune_appearance: bool = False

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.keypoints, list) or self.keypoints in KEYPOINT_SETS,
             f"keypoints must be one of {KEYPOINT_SETS} or a list of mesh indices"),
            (set(self.taps) <= set(TAP_STRIDES) and len(self.taps) > 0,
             f"taps must be a non-empty subset of {TAP_STRIDES}"),
            (self.use_keypoint_features or self.use_global,
             "use_keypoint_features and use_global cannot both be off"),
            (self.rkfa in RKFA_FORMS, f"rkfa must be one of {RKFA_FORMS}"),
            (self.head in HEADS, f"head must be one of {HEADS}"),
            (self.color_mode in COLOR_MODES, f"color_mode must be one of {COLOR_MODES}"),
            (self.dim > 0 and self.hidden > 0 and 0 <= self.dropout < 1,
             "dim and hidden must be positive and dropout in [0, 1)"),
            (self.appearance in APPEARANCE_MODES,
             f"appearance must be one of {APPEARANCE_MODES}"),
            (set(self.appearance_taps) <= set(APPEARANCE_TAPS) and len(self.appearance_taps) > 0,
             f"appearance_taps must be a non-empty subset of {tuple(APPEARANCE_TAPS)}"),
            (self.appearance_global in APPEARANCE_GLOBAL,
             f"appearance_global must be one of {APPEARANCE_GLOBAL}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise KeyferError(f"bad model config: {message}")
