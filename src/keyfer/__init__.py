"""keyfer: facial expression recognition with Keypoint Features on a pure-PyTorch face pipeline."""

from keyfer._version import __version__
from keyfer.api import ExpressionRecognizer, Face
from keyfer.faces.pipeline import FacePipeline, Faces
from keyfer.models.registry import create_model, list_models

__all__ = [
    "ExpressionRecognizer",
    "Face",
    "FacePipeline",
    "Faces",
    "__version__",
    "create_model",
    "list_models",
]
