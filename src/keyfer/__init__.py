"""keyfer: facial expression recognition with Keypoint Features on a pure-PyTorch face pipeline."""

from keyfer.faces.pipeline import FacePipeline, Faces

__version__ = "0.1.0"

__all__ = ["FacePipeline", "Faces", "__version__"]
