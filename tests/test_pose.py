"""Head pose from the mesh: zero for the frontal example, and it follows known rotations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from keyfer.faces.pose import head_pose


@pytest.fixture(scope="module")
def mesh(pipeline_no_tiling, astronaut) -> torch.Tensor:
    return pipeline_no_tiling(astronaut).mesh[0]


def _rotate(mesh: torch.Tensor, axis: str, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    matrices = {
        "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
        "x": [[1, 0, 0], [0, c, -s], [0, s, c]],
        "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]],
    }
    centre = mesh.mean(0)
    return (mesh - centre) @ torch.tensor(matrices[axis]).T + centre


def test_the_example_face_is_near_frontal(mesh):
    yaw, pitch, roll = head_pose(mesh).tolist()
    assert abs(yaw) < 5 and abs(pitch) < 8 and abs(roll) < 8


@pytest.mark.parametrize(("axis", "index", "sign"), [("y", 0, -1), ("x", 1, -1), ("z", 2, 1)])
def test_pose_follows_a_known_rotation(mesh, axis, index, sign):
    base = head_pose(mesh)
    turned = head_pose(_rotate(mesh, axis, 25.0))
    assert (turned - base)[index].item() == pytest.approx(sign * 25.0, abs=1.5)


def test_mirroring_the_image_flips_yaw_and_roll(pipeline_no_tiling, astronaut, mesh):
    mirrored = pipeline_no_tiling(np.ascontiguousarray(astronaut[:, ::-1])).mesh[0]
    yaw, pitch, roll = head_pose(mesh).tolist()
    m_yaw, m_pitch, m_roll = head_pose(mirrored).tolist()
    assert m_roll == pytest.approx(-roll, abs=1.5) and m_pitch == pytest.approx(pitch, abs=1.5)
    assert m_yaw == pytest.approx(-yaw, abs=1.5)
