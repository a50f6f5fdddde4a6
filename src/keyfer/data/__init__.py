"""Dataset adapters in their official on-disk formats, the class vocabulary, the one sample
loader and the one face preparation of training and eval (:func:`sample_crop`). Preparing a
pre-cropped face for a model is :mod:`keyfer.preprocessing`'s job."""

from keyfer.data.affectnet import load_affectnet
from keyfer.data.crops import sample_crop
from keyfer.data.datasets import DATASETS, load_split
from keyfer.data.fer2013 import load_fer2013
from keyfer.data.ferplus import FerPlusSplit, load_ferplus, read_label_csv
from keyfer.data.folder import load_folder
from keyfer.data.labels import CLASSES, Sample, canonical_class
from keyfer.data.muxspace import load_muxspace
from keyfer.data.rafdb import load_rafdb
from keyfer.data.samples import load_sample_image
from keyfer.data.sfew import load_sfew
from keyfer.data.split import DatasetSplit
from keyfer.data.tfeid import load_tfeid

__all__ = [
    "CLASSES",
    "DATASETS",
    "DatasetSplit",
    "FerPlusSplit",
    "Sample",
    "canonical_class",
    "load_affectnet",
    "load_fer2013",
    "load_ferplus",
    "load_folder",
    "load_muxspace",
    "load_rafdb",
    "load_sample_image",
    "load_sfew",
    "load_split",
    "load_tfeid",
    "read_label_csv",
    "sample_crop",
]
