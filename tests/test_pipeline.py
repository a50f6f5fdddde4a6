"""The face pipeline end to end on the bundled example (golden) and on synthetic images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from keyfer.faces.detector import plan_views
from keyfer.faces.ibug68 import MESH_TO_IBUG68, NASAL_BASE, ibug68, inter_ocular_distance
from keyfer.faces.pipeline import FacePipeline
from tests.conftest import ROOT, TIGHT_CORNER

GOLDEN = json.loads((ROOT / "tests/data/astronaut_golden.json").read_text())
MEDIAPIPE = json.loads(
    (ROOT / "docs/results/mediapipe_reference/mediapipe_astronaut.json").read_text()
)["images"]["astronaut.png"]


def test_golden_mesh_matches_tflite_reference_within_a_pixel(pipeline, astronaut):
    faces = pipeline(astronaut)
    assert len(faces) == 1
    golden = torch.tensor(GOLDEN["mesh"])
    assert (faces.mesh[:, :, :2] - golden[:, :, :2]).norm(dim=-1).max() < 1.0
    assert torch.allclose(faces.boxes, torch.tensor(GOLDEN["boxes"]), atol=0.5)


def test_mesh_matches_mediapipe_own_pipeline(pipeline_no_tiling, astronaut):
    faces = pipeline_no_tiling(astronaut)
    theirs = torch.tensor(MEDIAPIPE["faces"][0]["mesh"])
    assert (faces.mesh[0, :, :2] - theirs[:, :2]).norm(dim=-1).mean() < 1.0
    box = torch.tensor(MEDIAPIPE["detections"][0]["box"])
    assert torch.allclose(faces.boxes[0], box, atol=1.0)


def test_face_outputs_are_consistent(pipeline, astronaut):
    faces = pipeline(astronaut, taps=[4, 32])
    assert faces.presence[0] > 0.9
    assert faces.crops.shape == (1, 3, 192, 192)
    assert faces.taps[4].shape == (1, 32, 48, 48)
    assert torch.equal(faces.landmarks68, faces.mesh[:, MESH_TO_IBUG68, :2])
    x0, y0, x1, y1 = faces.boxes[0]
    x, y = faces.landmarks68[0].T
    assert ((x > x0 - 20) & (x < x1 + 20) & (y > y0 - 20) & (y < y1 + 20)).all()
    # Nose below the eyes, mouth below the nose (y points down).
    eyes_y = faces.landmarks68[0, 36:48, 1].mean()
    assert eyes_y < faces.landmarks68[0, NASAL_BASE, 1] < faces.landmarks68[0, 48:68, 1].mean()


def test_ibug68_helpers():
    mesh = torch.arange(468 * 2, dtype=torch.float32).view(468, 2)
    points = ibug68(mesh)
    assert points.shape == (68, 2)
    assert MESH_TO_IBUG68[NASAL_BASE] == 2
    assert inter_ocular_distance(points) == (points[36] - points[45]).norm()


NO_FACE = {
    "blank": np.full((240, 320, 3), 127, np.uint8),
    "noise": np.random.default_rng(0).integers(0, 256, (120, 100, 3), dtype=np.uint8),
}


@pytest.mark.parametrize("name", list(NO_FACE))
def test_an_image_without_a_face_has_none_even_with_the_fallback(pipeline, name):
    assert pipeline.fallback
    faces = pipeline(NO_FACE[name])
    assert len(faces) == 0
    assert faces.mesh.shape == (0, 468, 3)


def test_a_tight_face_crop_is_the_whole_image_taken_as_a_face(pipeline, astronaut, tight_crop):
    faces = pipeline(tight_crop)
    assert len(faces) == 1 and faces.found_by == "whole-image"
    height, width = tight_crop.shape[:2]
    assert faces.boxes.tolist() == [[0.0, 0.0, float(width), float(height)]]
    assert faces.scores is None and faces.keypoints6 is None
    assert faces.presence[0] >= pipeline.whole_image_min_presence
    # Eyes, brows, nose and mouth inside the crop, near where the whole photo puts them.
    inner = faces.landmarks68[0, 17:]
    assert ((inner >= 0) & (inner < torch.tensor([width, height]))).all()
    truth = pipeline(astronaut).landmarks68[0] - torch.tensor(TIGHT_CORNER, dtype=torch.float32)
    error = (inner - truth[17:]).norm(dim=-1).mean() / inter_ocular_distance(truth)
    assert error < 0.15


def test_without_the_fallback_a_tight_face_crop_has_no_face(pipeline, tight_crop):
    no_fallback = FacePipeline(fallback=False, facemesh=pipeline.facemesh)
    assert len(no_fallback(tight_crop)) == 0
    assert [len(faces) for faces in no_fallback.batch([tight_crop])] == [0]


def test_batch_falls_back_only_for_the_images_without_a_face(pipeline, astronaut, tight_crop):
    found = pipeline.batch([tight_crop, astronaut, NO_FACE["blank"]], batch_size=2)
    assert [len(faces) for faces in found] == [1, 1, 0]
    assert [faces.found_by for faces in found[:2]] == ["whole-image", "detector"]
    assert torch.allclose(found[0].mesh, pipeline(tight_crop).mesh, atol=1e-3)


def test_given_boxes_are_found_by_given_and_never_fall_back(pipeline, tight_crop):
    height, width = tight_crop.shape[:2]
    given = pipeline(tight_crop, boxes=[[0, 0, width, height]])
    assert len(given) == 1 and given.found_by == "given"
    none_given = pipeline(tight_crop, boxes=np.zeros((0, 4)))
    assert len(none_given) == 0 and none_given.found_by == "given"


def test_tiling_finds_a_small_face_the_whole_image_pass_misses(
    pipeline, pipeline_no_tiling, astronaut
):
    face = cv2.resize(astronaut[40:240, 120:320], (150, 150), interpolation=cv2.INTER_AREA)
    canvas = np.full((1200, 1600, 3), 90, np.uint8)
    canvas[700:850, 300:450] = face
    assert len(pipeline_no_tiling(canvas)) == 0
    faces = pipeline(canvas)
    assert len(faces) == 1
    centre = (faces.boxes[0, :2] + faces.boxes[0, 2:]) / 2
    assert torch.allclose(centre, torch.tensor([375.0, 775.0]), atol=15)


@pytest.mark.parametrize(
    ("size", "tile_side", "tiles"),
    [((1024, 768), 341, 12), ((640, 480), 256, 9), ((200, 150), None, 0)],
)
def test_tiles_are_a_third_of_the_long_side_but_at_least_256_px(size, tile_side, tiles):
    whole, *rest = plan_views(*size, tiling=True)
    assert whole.side == max(size) and len(rest) == tiles
    assert {view.side for view in rest} == ({tile_side} if tiles else set())
    # The tiles cover the whole image.
    covered = np.zeros(size[::-1], bool)
    for view in rest:
        covered[
            round(view.y0) : round(view.y0) + view.side, round(view.x0) : round(view.x0) + view.side
        ] = True
    assert covered.all() or not tiles
    assert plan_views(*size, tiling=False) == [whole]


def test_coordinates_follow_the_image_when_it_is_flipped(pipeline, astronaut):
    faces = pipeline(astronaut)
    flipped = pipeline(np.ascontiguousarray(astronaut[:, ::-1]))
    width = astronaut.shape[1]
    mirrored = width - flipped.boxes[0, [2, 1, 0, 3]]
    mirrored[[1, 3]] = flipped.boxes[0, [1, 3]]
    assert torch.allclose(mirrored, faces.boxes[0], atol=4)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_landmarks_scale_with_the_image(pipeline, astronaut, scale):
    base = pipeline(astronaut).landmarks68[0]
    size = round(astronaut.shape[1] * scale)
    resized = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA)
    scaled = pipeline(resized).landmarks68[0] / scale
    error = (scaled - base).norm(dim=-1).mean() / inter_ocular_distance(base)
    assert error < 0.03
