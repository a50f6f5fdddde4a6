"""keyfer: facial expression recognition with Keypoint Features on a pure-PyTorch face pipeline."""

from keyfer.api import ExpressionRecognizer, Face
from keyfer.faces.pipeline import FacePipeline, Faces
from keyfer.models.registry import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "ExpressionRecognizer",
    "Face",
    "FacePipeline",
    "Faces",
    "__version__",
    "create_model",
    "list_models",
]
