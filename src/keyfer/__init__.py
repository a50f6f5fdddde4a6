"""keyfer: facial expression recognition with Keypoint Features on a pure-PyTorch face pipeline."""

from keyfer._version import __version__
from keyfer.api import ExpressionRecognizer
from keyfer.deprecation import deprecated_alias
from keyfer.drawing import draw
from keyfer.errors import KeyferError
from keyfer.faces.detector import Detections
from keyfer.faces.pipeline import DetectedFaces, Detector, FacePipeline
from keyfer.models.info import ModelInfo
from keyfer.models.registry import create_model, list_models
from keyfer.results import Expression, Face, FrameResult, VideoSummary, to_dataframe

__all__ = [
    "DetectedFaces",
    "Detections",
    "Detector",
    "Expression",
    "ExpressionRecognizer",
    "Face",
    "FacePipeline",
    "FrameResult",
    "KeyferError",
    "ModelInfo",
    "VideoSummary",
    "__version__",
    "create_model",
    "draw",
    "list_models",
    "to_dataframe",
]


__getattr__ = deprecated_alias(
    __name__,
    "Faces",
    DetectedFaces,
    "keyfer.Faces is now keyfer.DetectedFaces; the old name goes in keyfer 0.4",
)
