"""Faces: BlazeFace detection, alignment, FaceMesh landmarks and the dlib face-recognition ResNet,
ported to PyTorch with their shipped weights."""
