"""The typed Python API: the examples of the README and docs/api-guide.md, faces with attributes,
your own boxes, crops and detectors, streaming batches, video summaries, drawing, DataFrames and
the deprecated names."""

from __future__ import annotations

import json
import re
import sys

import cv2
import numpy as np
import pytest
import torch

import keyfer
from keyfer import DetectedFaces, ExpressionRecognizer, FacePipeline, KeyferError, VideoSummary
from keyfer.faces.detector import FaceDetector
from keyfer.io.records import face_records
from tests.conftest import EXAMPLE, ROOT

ASTRONAUT_BOX = [170.0, 75.0, 280.0, 185.0]  # around the face, looser than BlazeFace's box


def _python_blocks(document: str, heading: str | None = None) -> list[str]:
    """The ```python blocks of a Markdown document under the repository's root, or of its
    ``## heading`` section only."""
    text = (ROOT / document).read_text(encoding="utf-8")
    if heading is not None:
        text = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def _run_blocks(blocks: list[str], document: str) -> dict:
    """Run ``blocks`` as written, in order, in one namespace; return it."""
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, document, "exec"), namespace)  # noqa: S102
    return namespace


def test_readme_python_api_example_runs(monkeypatch):
    """The README's API example runs as written from the repository's root."""
    blocks = _python_blocks("README.md", "Python API")
    assert len(blocks) == 1
    monkeypatch.chdir(ROOT)
    assert _run_blocks(blocks, "README.md")["faces"]


def test_api_guide_examples_run(monkeypatch):
    """Every Python block of docs/api-guide.md runs as written, in order, from the repository's
    root; one of them passes its own face boxes."""
    blocks = _python_blocks("docs/api-guide.md")
    assert len(blocks) >= 2 and any("boxes=" in block for block in blocks)
    monkeypatch.chdir(ROOT)
    assert _run_blocks(blocks, "docs/api-guide.md")["faces"]  # the last block's faces


@pytest.fixture(scope="module")
def recognizer():
    return ExpressionRecognizer("keyfer-ferplus-fast", device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def analyzed(recognizer, astronaut):
    return recognizer.analyze(astronaut)


def test_a_face_has_typed_attributes_and_a_short_repr(analyzed):
    detected, (face,) = analyzed
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    assert face.keypoints6.shape == (6, 2) and face.landmarks68.shape == (68, 2)
    assert face.mesh.shape == (468, 3) and face.keypoint_importance.shape == (68,)
    assert np.array_equal(face.box, detected.boxes[0].numpy())
    assert np.array_equal(face.mesh, detected.mesh[0].numpy())
    assert isinstance(face.score, float) and isinstance(face.presence, float)
    assert face.score == float(detected.scores[0])
    assert set(face.pose) == {"yaw", "pitch", "roll"} and face.reliable is True
    assert face.label == max(face.probabilities, key=face.probabilities.get) == "happiness"
    assert face.probabilities["happiness"] != round(face.probabilities["happiness"], 4)
    assert len(repr(face)) < 120 and "happiness" in repr(face)


def test_values_are_rounded_only_in_the_record(analyzed):
    detected, (face,) = analyzed
    record = face.to_record()
    (geometry,) = face_records(detected)
    assert {key: record[key] for key in geometry} == geometry
    assert record["expression"]["probabilities"] == {
        name: round(p, 4) for name, p in face.probabilities.items()
    }
    assert record["pose"] == {angle: round(v, 2) for angle, v in face.pose.items()}
    assert record["keypoint_importance"] == [round(float(w), 4) for w in face.keypoint_importance]
    json.dumps(record)


def test_your_own_boxes_give_one_face_each_in_order(recognizer, astronaut):
    """A box around the face, then one on a patch of the background: both are kept, in order,
    the background's marked unreliable; a given box has no score and no keypoints."""
    background = [0.0, 400.0, 100.0, 500.0]
    faces = recognizer.predict(astronaut, boxes=np.array([ASTRONAUT_BOX, background]))
    assert len(faces) == 2
    assert faces[0].box.tolist() == ASTRONAUT_BOX and faces[1].box.tolist() == background
    assert faces[0].label == "happiness" and faces[0].reliable
    assert not faces[1].reliable
    assert all(face.score is None and face.keypoints6 is None for face in faces)
    assert all(face.found_by == "given" for face in faces)
    record = faces[0].to_record()
    assert record["score"] is None and record["keypoints6"] is None
    assert record["found_by"] == "given"
    json.dumps(record)
    assert recognizer.predict(astronaut, boxes=np.zeros((0, 4))) == []
    # The upright crop from the box lands on the same face as the detector's levelled one.
    (detected,) = recognizer.predict(astronaut)
    assert np.abs(faces[0].landmarks68 - detected.landmarks68).max() < 6


def test_a_tight_face_crop_gives_one_whole_image_face(recognizer, tight_crop):
    """The detector misses the crop; the whole image is taken as the face, and the switch
    turns that off."""
    (face,) = recognizer.predict(tight_crop)
    height, width = tight_crop.shape[:2]
    assert face.found_by == "whole-image" and face.to_record()["found_by"] == "whole-image"
    assert face.box.tolist() == [0, 0, width, height]
    assert face.score is None and face.keypoints6 is None
    assert face.label == "happiness"
    off = ExpressionRecognizer("keyfer-ferplus-fast", device="cpu", fallback=False)
    assert off.predict(tight_crop) == []
    assert [face.found_by for face in off.predict(EXAMPLE)] == ["detector"]


def test_a_whole_image_face_is_reliable_only_with_a_high_presence(
    recognizer, tight_crop, monkeypatch
):
    """The fallback keeps a whole image from a presence of 0.1; it is reliable from 0.8."""
    (face,) = recognizer.predict(tight_crop)
    assert recognizer.pipeline.whole_image_min_presence < keyfer.api.RELIABLE_MIN_PRESENCE
    assert face.presence >= keyfer.api.RELIABLE_MIN_PRESENCE and face.reliable
    monkeypatch.setattr(keyfer.api, "RELIABLE_MIN_PRESENCE", face.presence + 0.01)
    assert not recognizer.predict(tight_crop)[0].reliable


@pytest.mark.parametrize(
    "boxes",
    [[1, 2, 3, 4], [[10, 10, 5, 20]], [[0, 0, float("nan"), 5]], [[0, 0, 5]], "box"],
    ids=["flat", "inverted", "nan", "three-columns", "text"],
)
def test_bad_boxes_are_one_line(recognizer, astronaut, boxes):
    with pytest.raises(KeyferError, match="boxes must be"):
        recognizer.predict(astronaut, boxes=boxes)


def test_classify_crops_gives_the_expressions_of_predict(recognizer, analyzed):
    detected, faces = analyzed
    (expression,) = recognizer.classify_crops(detected.crops)
    assert expression.label == faces[0].label
    assert expression.probabilities == faces[0].probabilities
    assert np.array_equal(expression.keypoint_importance, faces[0].keypoint_importance)
    with pytest.raises(KeyferError, match="crops must be"):
        recognizer.classify_crops(torch.zeros(1, 3, 128, 128))


class _Recorded:
    """A detector that hands on keyfer's own detections, and counts its calls."""

    def __init__(self) -> None:
        self.inner = FaceDetector()
        self.calls = 0

    def detect_batch(self, images):
        self.calls += 1
        return self.inner.detect_batch(images)


class _NoKeypoints(_Recorded):
    def detect_batch(self, images):
        found = super().detect_batch(images)
        return [keyfer.Detections(d.boxes, None, d.scores) for d in found]


def test_a_plugged_in_detector_replaces_keyfers(astronaut):
    detector = _Recorded()
    plugged = FacePipeline(detector=detector)(astronaut)
    assert detector.calls == 1
    assert torch.equal(plugged.mesh, FacePipeline()(astronaut).mesh)
    upright = FacePipeline(detector=_NoKeypoints())(astronaut)
    assert upright.keypoints6 is None and len(upright) == 1
    with pytest.raises(KeyferError, match="not both"):
        FacePipeline(detector=detector, detector_network=lambda views: views)


def test_predict_batch_reads_images_as_the_results_are_consumed(recognizer):
    pulled = []

    def images():
        for index in range(5):
            pulled.append(index)
            yield EXAMPLE

    results = recognizer.predict_batch(images())
    assert pulled == []
    first = next(results)
    assert len(first) == 1 and pulled == [0, 1]  # batch_size=2 images
    assert [len(faces) for faces in results] == [1, 1, 1, 1] and len(pulled) == 5


def test_the_recognizer_leaves_torch_threads_alone():
    before = torch.get_num_threads()
    ExpressionRecognizer("keyfer-ferplus-fast", device="cpu", threads=before + 1)
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    for _ in range(3):
        writer.write(cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_a_video_reports_its_corrupt_frames_in_a_summary(recognizer, clip):
    frames = recognizer.predict_video(clip, tiling=False)
    results = list(frames)
    assert [r.frame for r in results] == [0, 1, 2]
    assert frames.summary == VideoSummary(frames=3, corrupt_frames=0)
    assert len(repr(results[0])) < 400
    with pytest.deprecated_call():
        assert recognizer.last_corrupt_frames == 0


def test_tiling_cannot_be_set_on_a_plugged_in_detector(clip):
    recognizer = ExpressionRecognizer("keyfer-ferplus-fast", device="cpu", detector=_Recorded())
    with pytest.raises(KeyferError, match="tiling"):
        recognizer.predict_video(clip, tiling=True)


def test_draw_gives_an_annotated_copy(analyzed, astronaut):
    detected, faces = analyzed
    before = astronaut.copy()
    drawn = keyfer.draw(astronaut, faces)
    assert drawn.shape == astronaut.shape and np.array_equal(astronaut, before)
    assert (drawn != astronaut).any()
    assert np.array_equal(keyfer.draw(EXAMPLE, faces), drawn)
    assert (keyfer.draw(astronaut, detected) != drawn).any()  # no label on the pipeline's faces
    assert np.array_equal(keyfer.draw(astronaut, []), astronaut)


def test_to_dataframe_has_a_row_per_face(analyzed, recognizer, clip):
    pytest.importorskip("pandas")
    _, faces = analyzed
    table = keyfer.to_dataframe(faces)
    assert len(table) == 1 and table.loc[0, "label"] == "happiness"
    assert table.loc[0, "x0"] == pytest.approx(float(faces[0].box[0]))
    assert {"score", "presence", "reliable", "yaw", "p_happiness"} <= set(table.columns)
    assert table.loc[0, "found_by"] == "detector"
    frames = keyfer.to_dataframe(recognizer.predict_video(clip, tiling=False))
    assert frames["frame"].tolist() == [0, 1, 2] and "time_s" in frames.columns


def test_to_dataframe_without_pandas_is_one_line(analyzed, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(KeyferError, match=r"pip install 'keyfer\[pandas\]'"):
        keyfer.to_dataframe(analyzed[1])


def test_old_names_still_work_with_a_deprecation_warning(analyzed):
    from keyfer.faces import pipeline

    with pytest.deprecated_call():
        assert keyfer.Faces is DetectedFaces
    with pytest.deprecated_call():
        assert pipeline.Faces is DetectedFaces
    face = analyzed[1][0]
    with pytest.deprecated_call():
        assert face.record == face.to_record()


def test_the_package_is_typed_and_exports_its_errors():
    assert (ROOT / "src" / "keyfer" / "py.typed").is_file()
    assert keyfer.KeyferError is KeyferError and "FrameResult" in keyfer.__all__
