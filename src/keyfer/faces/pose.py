"""Head pose (yaw, pitch, roll in degrees) from FaceMesh's 3-D mesh.

The mesh is in image pixels with x right, y down and z away from the camera (MediaPipe's z,
in x's scale). The face's axes are the outer-eye line (vertex 33 -> 263, the subject's right to
left) and the chin -> forehead line (152 -> 10); their cross product is the face normal.
- yaw > 0: the face turns towards the viewer's right (the subject's left);
- pitch > 0: the face tilts up;
- roll > 0: the head leans clockwise on screen (the subject's left eye lower).
All three are 0 for a frontal, upright face. The chin -> forehead line leans back from the face
plane, so the raw pitch of a frontal face is negative; ``PITCH_OFFSET`` removes that: it is the
median raw pitch of the FaceMesh meshes of the AFW faces (1,356 detections with presence > 0.9
from ``keyfer landmarks $KEYFER_DATA/afw``; the example image reads -10.9 raw).
"""

from __future__ import annotations

import torch

_RIGHT_EYE_OUTER, _LEFT_EYE_OUTER, _CHIN, _FOREHEAD = 33, 263, 152, 10
PITCH_OFFSET = 7.9


def head_pose(mesh: torch.Tensor) -> torch.Tensor:
    """(..., 468, 3) mesh -> (..., 3) yaw, pitch, roll in degrees."""
    right = mesh[..., _LEFT_EYE_OUTER, :] - mesh[..., _RIGHT_EYE_OUTER, :]
    right = right / right.norm(dim=-1, keepdim=True)
    up = mesh[..., _FOREHEAD, :] - mesh[..., _CHIN, :]
    up = up - (up * right).sum(-1, keepdim=True) * right
    up = up / up.norm(dim=-1, keepdim=True)
    normal = torch.linalg.cross(right, up)  # towards the camera for a frontal face
    yaw = torch.atan2(normal[..., 0], -normal[..., 2])
    pitch = torch.asin((-normal[..., 1]).clamp(-1, 1)) + torch.deg2rad(torch.tensor(PITCH_OFFSET))
    roll = torch.atan2(right[..., 1], right[..., 0])
    return torch.rad2deg(torch.stack([yaw, pitch, roll], dim=-1))
