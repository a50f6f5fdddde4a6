"""Affine maps and IoU over devices and dtypes, pixel conventions, similarity transforms,
anchors, padding and NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from keyfer.faces import align
from keyfer.faces.anchors import short_range_anchors
from keyfer.faces.blocks import same_padding
from keyfer.faces.facemesh import CROP_SIZE
from keyfer.faces.nms import weighted_nms
from keyfer.geometry import (
    apply_affine,
    box_areas,
    box_iou,
    compose_affine,
    intersection_areas,
    invert_affine,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]  # fmt: skip
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_maps_keep_device_and_dtype_and_round_trip(device: str, dtype: torch.dtype):
    transforms = _random_transforms(4).to(device, dtype)
    points = (torch.rand(4, 7, 2, dtype=torch.float64) * CROP_SIZE).to(device, dtype)
    mapped = apply_affine(transforms, points)
    assert (mapped.device.type, mapped.dtype, mapped.shape) == (device, dtype, (4, 7, 2))
    tolerance = 1e-9 if dtype == torch.float64 else 2e-3
    back = apply_affine(invert_affine(transforms), mapped)
    assert torch.allclose(back, points, atol=tolerance)
    identity = compose_affine(invert_affine(transforms), transforms)
    expected = torch.eye(2, 3, dtype=dtype, device=device).expand(4, 2, 3)
    assert torch.allclose(identity, expected, atol=tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_compose_applies_inner_first(device: str, dtype: torch.dtype):
    outer, inner = _random_transforms(6).to(device, dtype).split(3)
    points = torch.rand(3, 5, 2, dtype=dtype, device=device) * 100
    direct = apply_affine(compose_affine(outer, inner), points)
    assert torch.allclose(direct, apply_affine(outer, apply_affine(inner, points)), rtol=1e-4)


def test_shared_points_broadcast_over_the_batch():
    transforms = _random_transforms(3)
    points = torch.rand(1, 5, 2, dtype=torch.float64)
    assert torch.equal(apply_affine(transforms, points)[2], apply_affine(transforms[2:], points)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_values(device: str, dtype: torch.dtype):
    boxes = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 20, 20]], dtype=dtype)
    boxes = boxes.to(device)
    iou = box_iou(boxes, boxes[:2])
    assert (iou.shape, iou.device.type, iou.dtype) == ((3, 2), device, dtype)
    expected = torch.tensor([[1, 50 / 150], [50 / 150, 1], [0, 0]], dtype=dtype, device=device)
    assert torch.allclose(iou, expected)
    assert torch.equal(intersection_areas(boxes[:1], boxes[1:2]), torch.tensor([[50]]).to(iou))
    assert torch.equal(box_areas(boxes), torch.tensor([100, 100, 0]).to(iou))
    assert box_iou(boxes[2:], boxes[2:]).item() == 0  # two empty boxes: no overlap, no NaN


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: apply_affine(torch.zeros(2, 3), torch.zeros(1, 4, 2)), r"\(B, 2, 3\)"),
        (lambda: apply_affine(torch.zeros(1, 2, 3), torch.zeros(4, 2)), r"\(B, K, 2\)"),
        (lambda: invert_affine(torch.zeros(1, 3, 3)), r"\(B, 2, 3\)"),
        (lambda: compose_affine(torch.zeros(1, 2, 3), torch.zeros(1, 2, 2)), r"\(B, 2, 3\)"),
        (lambda: box_iou(torch.zeros(4), torch.zeros(1, 4)), r"\(N, 4\)"),
        (lambda: box_iou(torch.zeros(1, 4), torch.zeros(1, 5)), r"\(M, 4\)"),
    ],
)
def test_wrong_shapes_name_the_expected_shape(call, message: str):
    with pytest.raises(ValueError, match=message):
        call()


def test_same_padding_matches_tensorflow():
    assert same_padding(128, 5, 2) == (1, 2)
    assert same_padding(192, 3, 2) == (0, 1)
    assert same_padding(96, 3, 1) == (1, 1)


def test_anchor_layout():
    anchors = short_range_anchors()
    assert anchors.shape == (896, 2)
    # First map: 16x16 cells, 2 anchors each, x running fastest after the cell's anchors.
    assert torch.allclose(anchors[0], torch.tensor([0.5 / 16, 0.5 / 16]))
    assert torch.equal(anchors[0], anchors[1])
    assert torch.allclose(anchors[2], torch.tensor([1.5 / 16, 0.5 / 16]))
    assert torch.allclose(anchors[32], torch.tensor([0.5 / 16, 1.5 / 16]))
    # Second map: 8x8 cells, 6 anchors each.
    assert torch.allclose(anchors[512:518], torch.full((6, 2), 0.5 / 8))
    assert torch.allclose(anchors[-1], torch.tensor([7.5 / 8, 7.5 / 8]))


def _random_transforms(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    centre = torch.rand(n, 2, generator=g) * 500
    scale = torch.rand(n, generator=g) * 3 + 0.2
    angle = (torch.rand(n, generator=g) - 0.5) * 2 * math.pi
    return align.similarity(centre.double(), scale.double(), angle.double())


def test_inverse_transform_round_trip():
    transforms = _random_transforms(5)
    points = torch.rand(5, 68, 2, dtype=torch.float64) * CROP_SIZE
    back = apply_affine(invert_affine(transforms), apply_affine(transforms, points))
    assert torch.allclose(back, points, atol=1e-9)


def test_similarity_maps_crop_centre_to_centre_and_scales():
    centre = torch.tensor([[100.0, 50.0]])
    transform = align.similarity(centre, torch.tensor([2.0]), torch.tensor([math.pi / 2]))
    mapped = apply_affine(transform, torch.tensor([[[96.0, 96.0], [97.0, 96.0]]]))
    assert torch.allclose(mapped[0, 0], centre[0])
    # +x in the crop is +y in the image after a quarter turn (y points down), two pixels long.
    assert torch.allclose(mapped[0, 1] - mapped[0, 0], torch.tensor([0.0, 2.0]), atol=1e-6)


def test_roi_from_detection_is_level_for_level_eyes():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 100.0]])
    keypoints = torch.zeros(1, 6, 2)
    keypoints[0, 0] = torch.tensor([40.0, 50.0])  # subject's right eye, viewer's left
    keypoints[0, 1] = torch.tensor([80.0, 50.0])
    transform = align.crop_to_image_from_detections(boxes, keypoints)
    corners = apply_affine(transform, torch.tensor([[[0.0, 0.0], [192.0, 192.0]]]))
    side = 1.5 * 100  # 1.5x the longer box side
    assert torch.allclose(corners[0, 0], torch.tensor([60 - side / 2, 60 - side / 2]))
    assert torch.allclose(corners[0, 1], torch.tensor([60 + side / 2, 60 + side / 2]))


def test_roi_rotation_follows_the_eye_line():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    keypoints = torch.zeros(1, 6, 2)
    keypoints[0, 0] = torch.tensor([30.0, 30.0])
    keypoints[0, 1] = torch.tensor([70.0, 70.0])  # eye line tilted 45 degrees down to the right
    transform = align.crop_to_image_from_detections(boxes, keypoints)
    direction = apply_affine(transform, torch.tensor([[[97.0, 96.0]]])) - apply_affine(
        transform, torch.tensor([[[96.0, 96.0]]])
    )
    assert torch.allclose(direction[0, 0] / direction.norm(), torch.tensor([1.0, 1.0]) / 2**0.5)


def test_mesh_to_image_scales_z_like_x():
    transform = align.similarity(torch.zeros(1, 2), torch.tensor([3.0]), torch.tensor([0.4]))
    mesh = torch.tensor([[[96.0, 96.0, 5.0]]])
    assert torch.allclose(align.mesh_to_image(transform, mesh)[0, 0, 2], torch.tensor(15.0))


def test_extract_crops_samples_where_the_transform_points():
    image = np.zeros((300, 400, 3), np.uint8)
    image[120, 250] = (255, 0, 0)  # one red pixel at OpenCV index (x=250, y=120)
    transform = align.similarity(
        torch.tensor([[250.0, 120.0]]), torch.tensor([1.0]), torch.tensor([0.0])
    )
    crop = align.extract_crops(image, transform)
    assert crop.shape == (1, 3, 192, 192)
    # MediaPipe's sampling: crop index (96, 96) reads image index (250, 120).
    assert crop[0, 0, 96, 96] == 1.0
    assert crop[0, 0].sum() == 1.0


def test_extract_crops_replicates_edges_outside_the_image():
    image = np.full((10, 10, 3), 200, np.uint8)
    transform = align.similarity(
        torch.tensor([[0.0, 0.0]]), torch.tensor([1.0]), torch.tensor([0.0])
    )
    crop = align.extract_crops(image, transform)
    assert torch.allclose(crop, torch.full_like(crop, 200 / 255))


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    keypoints = boxes[:, None, :2].repeat(1, 6, 1)
    scores = torch.tensor([0.9, 0.6, 0.7])
    out_boxes, out_keypoints, out_scores = weighted_nms(boxes, keypoints, scores, 0.3)
    assert torch.allclose(out_scores, torch.tensor([0.9, 0.7]))
    expected_x0 = (0.9 * 0 + 0.6 * 1) / 1.5
    assert out_boxes[0, 0].item() == pytest.approx(expected_x0)
    assert out_keypoints[0, 0, 0].item() == pytest.approx(expected_x0)
    assert torch.equal(out_boxes[1], boxes[2])


def test_weighted_nms_of_nothing():
    out = weighted_nms(torch.zeros(0, 4), torch.zeros(0, 6, 2), torch.zeros(0))
    assert [t.shape[0] for t in out] == [0, 0, 0]
