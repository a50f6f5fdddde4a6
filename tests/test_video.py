"""`keyfer predict` on videos: one record per processed frame, tracking, bad videos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.tracking import FaceTracker


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut):
    """Six 256x256 frames of the example face drifting right, as mp4."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    for shift in range(6):
        frame = np.roll(small, 4 * shift, axis=1)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_gives_one_record_per_processed_frame_with_tracks(clip, tmp_path):
    out = tmp_path / "video.jsonl"
    args = [
        "predict",
        str(clip),
        "--every",
        "2",
        "--smooth",
        "--no-tiling",
        "--jsonl",
        str(out),
        "--annotate",
        str(tmp_path / "ann"),
        "--csv",
        str(tmp_path / "v.csv"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 2, 4]
    assert records[1]["time_s"] == pytest.approx(0.2)
    assert all(len(r["faces"]) == 1 for r in records)
    assert {r["faces"][0]["track_id"] for r in records} == {0}
    assert (tmp_path / "ann" / "clip.mp4.mp4").stat().st_size > 0
    assert len((tmp_path / "v.csv").read_text().splitlines()) == 4


def test_a_file_that_is_not_a_video_is_an_error_record(tmp_path):
    bogus = tmp_path / "broken.mp4"
    bogus.write_bytes(b"\x00" * 1000)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, ["predict", str(bogus), "--json", str(out)])
    assert result.exit_code == 1
    (record,) = json.loads(out.read_text())["records"]
    assert "cannot open video" in record["error"]


def test_show_without_gui_is_one_line(clip):
    result = CliRunner().invoke(main, ["predict", str(clip), "--show"])
    assert result.exit_code == 2
    assert "pip install opencv-python" in result.output


def test_tracker_keeps_ids_and_smooths():
    tracker = FaceTracker()
    ids, first = tracker.update(
        np.array([[0, 0, 10, 10.0], [50, 50, 60, 60.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    )
    assert ids == [0, 1]
    ids, smoothed = tracker.update(
        np.array([[51, 50, 61, 60.0], [1, 0, 11, 10.0]]), np.array([[1.0, 0.0], [1.0, 0.0]])
    )
    assert ids == [1, 0]
    assert smoothed[0, 0] == pytest.approx(0.6) and smoothed[1, 0] == pytest.approx(1.0)
    ids, _ = tracker.update(np.array([[200, 200, 210, 210.0]]), np.array([[0.5, 0.5]]))
    assert ids == [2]


def test_a_corrupt_frame_is_skipped_and_the_video_goes_on(astronaut, tmp_path, caplog):
    clean = tmp_path / "clean.avi"
    writer = cv2.VideoWriter(str(clean), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    small = cv2.cvtColor(cv2.resize(astronaut, (256, 256)), cv2.COLOR_RGB2BGR)
    for shift in range(8):
        writer.write(np.roll(small, 3 * shift, axis=1))
    writer.release()
    data = bytearray(clean.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = bytes(4000)  # wipe part of one frame in the middle
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(bytes(data))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["predict", str(corrupt), "--jsonl", str(out)])
    assert result.exit_code == 1, result.output  # an AVI renumbers the frames after the loss
    *frames, last = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(frames) == 7  # one frame lost; the frames after it are still read
    assert "1 of its 8 frames are missing" in last["error"]
    assert "1 of its 8 frames are missing" in caplog.text


@pytest.mark.parametrize(("flags", "found_by"), [([], ["whole-image"]), (["--no-fallback"], [])])
def test_the_fallback_applies_to_frames_and_a_frame_without_a_face_is_empty(
    tight_crop, tmp_path, flags, found_by
):
    """Frames of a tight face crop, a blank frame between them: the crops are whole-image faces
    (none with --no-fallback), the blank frame has none."""
    clip = tmp_path / "tight.avi"
    height, width = tight_crop.shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    crop = cv2.cvtColor(tight_crop, cv2.COLOR_RGB2BGR)
    for frame in (crop, np.full_like(crop, 127), crop):
        writer.write(frame)
    writer.release()
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["predict", str(clip), "--jsonl", str(out), *flags])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [[face["found_by"] for face in r["faces"]] for r in records] == [found_by, [], found_by]
