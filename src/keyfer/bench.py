"""``keyfer bench``: speed of the expression pipeline on this machine (a benchmark, not a test).

Per backend: ms per stage for one image at a time (decode, detection, alignment, FaceMesh alone,
the feature networks with their Keypoint Features on the model's input (FaceMesh, and dlib's
ResNet for a model with an appearance branch), head), end-to-end faces/s
at batch 1 and batch 32 (batch 32 also without tiling, as for portraits and streams), aligned
crops/s through the crop network at batch 32, frames/s on one 640x480 stream (no tiling), and
the peak resident memory.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from keyfer import __version__
from keyfer.api import ExpressionRecognizer
from keyfer.errors import KeyferError
from keyfer.faces import align
from keyfer.io.images import find_images, read_image

STREAM_SIZE = (640, 480)
PEER_RUNNER = files("keyfer") / "resources" / "peer_fer.py"
"""The script the peer's interpreter runs: a resource file, not a keyfer module."""


def _median_ms(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _stage_ms(recognizer: ExpressionRecognizer, path: Path, repeats: int) -> dict[str, float]:
    image = read_image(path)
    pipeline, model = recognizer.pipeline, recognizer.model
    detections = pipeline.detector.detect_batch([image])[0]
    transforms = align.crop_to_image_from_detections(detections.boxes, detections.keypoints)
    crops = align.extract_crops(image, transforms)
    model_crops = recognizer.model_input(crops)
    stages = {
        "decode": lambda: read_image(path),
        "detection": lambda: pipeline.detector.detect_batch([image]),
        "alignment": lambda: align.extract_crops(
            image, align.crop_to_image_from_detections(detections.boxes, detections.keypoints)
        ),
        "mesh": lambda: pipeline.facemesh(crops),
    }
    onnx = recognizer.onnx
    if onnx is None:
        features = model.features(model_crops)
        stages["mesh_with_kf"] = lambda: model.features(model_crops)
        stages["head"] = lambda: model.classify(features)
    else:
        stages["mesh_with_kf_and_head"] = lambda: onnx(model_crops.numpy())
    with torch.inference_mode():
        return {name: round(_median_ms(run, repeats), 3) for name, run in stages.items()}


def _items_per_second(run: Callable[[], int], repeats: int) -> float:
    """Items (faces or images) per second over ``repeats`` calls of ``run``, which counts them."""
    run()
    start, faces = time.perf_counter(), 0
    for _ in range(repeats):
        faces += run()
    return round(faces / (time.perf_counter() - start), 2)


def _batch_faces_per_second(
    recognizer: ExpressionRecognizer, batch: list[np.ndarray], repeats: int
) -> float:
    """Faces/s of :meth:`ExpressionRecognizer.analyze_batch` on ``batch``, from the median time
    of separately timed calls (one slow call on a shared machine would skew a total)."""
    faces = sum(len(found) for _, found in recognizer.analyze_batch(batch))
    seconds = _median_ms(lambda: recognizer.analyze_batch(batch), max(3, repeats // 2)) / 1000
    return round(faces / seconds, 2)


def bench_backend(backend: str, model: str, paths: list[Path], repeats: int) -> dict[str, Any]:
    """Every figure of one backend; ``paths`` are the photos (at least one)."""
    recognizer = ExpressionRecognizer(model, device="cpu", backend=backend)
    images = [read_image(p) for p in paths]
    per_image = {str(p): _stage_ms(recognizer, p, repeats) for p in paths}
    batch = (images * 32)[: max(32, len(images))]
    stream = ExpressionRecognizer(model, device="cpu", backend=backend, tiling=False)
    frame = np.zeros((STREAM_SIZE[1], STREAM_SIZE[0], 3), np.uint8)
    face = cv2.resize(images[0], (STREAM_SIZE[1], STREAM_SIZE[1]), interpolation=cv2.INTER_AREA)
    frame[:, 80 : 80 + STREAM_SIZE[1]] = face
    crops = torch.rand(32, 3, 192, 192)
    onnx = recognizer.onnx
    if onnx is None:
        crop_network = lambda: recognizer.model(crops)  # noqa: E731
    else:
        crop_network = lambda: onnx(crops.numpy())  # noqa: E731
    with torch.inference_mode():
        crops_per_s = round(32 / (_median_ms(crop_network, repeats) / 1000), 1)
    stream_ms = _median_ms(lambda: stream.analyze(frame), repeats)
    return {
        "stage_ms_batch1": per_image,
        "faces_per_s_batch1": _items_per_second(
            lambda: sum(len(recognizer.analyze(i)[1]) for i in images), repeats
        ),
        "images_per_s_batch1": _items_per_second(
            lambda: sum(1 for i in images if recognizer.analyze(i)), repeats
        ),
        "faces_per_s_batch32": _batch_faces_per_second(recognizer, batch, repeats),
        "faces_per_s_batch32_no_tiling": _batch_faces_per_second(stream, batch, repeats),
        "crop_network_crops_per_s_batch32": crops_per_s,
        "stream_640x480_fps": round(1000 / stream_ms, 1),
    }


def bench_peer(python: str, images: list[Path], repeats: int) -> dict[str, Any]:
    """The ``fer`` package's speed on the same photos, timed by :data:`PEER_RUNNER` run by
    ``python`` (the interpreter of a venv with ``fer``)."""
    try:
        with as_file(PEER_RUNNER) as script:
            command = [python, str(script), "--repeats", str(repeats), *map(str, images)]
            done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as error:
        raise KeyferError(f"the peer benchmark failed to run with {python}: {error}") from error
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_bench(
    paths: list[Path],
    model: str,
    backends: list[str],
    repeats: int,
    peer_python: str | None = None,
) -> dict[str, Any]:
    """The whole benchmark as a JSON-ready dict; with ``peer_python``, the ``fer`` package too
    and keyfer's end-to-end speed over fer's (faces/s, batch 1)."""
    images = find_images(paths).images
    if not images:
        raise ValueError("no images to benchmark")
    result: dict[str, Any] = {
        "keyfer_version": __version__, "model": model, "images": [str(p) for p in images],
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "backends": {b: bench_backend(b, model, images, repeats) for b in backends},
    }  # fmt: skip
    result["peak_memory_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if peer_python:
        peer = bench_peer(peer_python, images, repeats)
        ours = result["backends"][backends[0]]["faces_per_s_batch1"]
        peer["keyfer_over_peer_faces_per_s"] = round(ours / max(peer["faces_per_s"], 1e-9), 2)
        ours = result["backends"][backends[0]]["images_per_s_batch1"]
        peer["keyfer_over_peer_images_per_s"] = round(ours / max(peer["images_per_s"], 1e-9), 2)
        result["peer"] = peer
    return result
