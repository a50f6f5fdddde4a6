"""Dataset adapters in their official on-disk formats, the class vocabulary, and the preparation
of pre-cropped faces for FaceMesh."""

from keyfer.data.ferplus import FerPlusSplit, load_ferplus, read_label_csv
from keyfer.data.folder import load_folder
from keyfer.data.labels import CLASSES, Sample, canonical_class
from keyfer.data.precrop import precrop_to_facemesh, precrop_transform, to_gray3

__all__ = [
    "CLASSES",
    "FerPlusSplit",
    "Sample",
    "canonical_class",
    "load_ferplus",
    "load_folder",
    "precrop_to_facemesh",
    "precrop_transform",
    "read_label_csv",
    "to_gray3",
]
