"""The iBUG-68 view of the FaceMesh mesh, and the named points keyfer uses.

``MESH_TO_IBUG68[i]`` is the mesh vertex used for iBUG point i + 1 (the 300-W scheme: jaw 1-17,
brows 18-27, nose 28-36, eyes 37-48, mouth 49-68). It is the mapping in common use for
MediaPipe's canonical face model; docs/ibug68_mapping.png shows it on the example image and
docs/results/ records its NME on AFW.
"""

from __future__ import annotations

import torch

MESH_TO_IBUG68 = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,  # brows
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose bridge, nostrils, subnasale (34)
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lip
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lip
)  # fmt: skip

# 0-based indices into the 68 points.
NASAL_BASE = 33  # iBUG point 34, the subnasale: the representative keypoint of RKFA
RIGHT_EYE_OUTER = 36  # iBUG point 37
LEFT_EYE_OUTER = 45  # iBUG point 46


def ibug68(mesh: torch.Tensor) -> torch.Tensor:
    """(..., 468, D) mesh -> (..., 68, D) iBUG-68 points."""
    return mesh[..., MESH_TO_IBUG68, :]


def inter_ocular_distance(landmarks68: torch.Tensor) -> torch.Tensor:
    """(..., 68, 2+) -> (...,) distance between the outer eye corners (iBUG 37 and 46)."""
    eyes = landmarks68[..., [RIGHT_EYE_OUTER, LEFT_EYE_OUTER], :2]
    return (eyes[..., 0, :] - eyes[..., 1, :]).norm(dim=-1)
