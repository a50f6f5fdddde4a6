"""Timing of the PyPI ``fer`` package on photos, for ``keyfer bench --peer-python``.

A resource file of keyfer, not a module: ``keyfer bench`` hands it to the peer's own
interpreter (a separate venv with ``fer``), which runs it as a script::

    PEER_PY peer_fer.py --repeats N IMAGE...

Prints one JSON object: images/s and faces/s end to end (decode excluded, as in keyfer's
faces/s), with fer's default OpenCV Haar-cascade detector.
"""

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images", nargs="+")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import cv2
    import fer
    from fer.fer import FER

    detector = FER(mtcnn=False)
    images = [cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB) for path in args.images]
    detector.detect_emotions(images[0])  # warm-up
    start, faces = time.perf_counter(), 0
    for _ in range(args.repeats):
        for image in images:
            faces += len(detector.detect_emotions(image))
    elapsed = time.perf_counter() - start
    count = args.repeats * len(images)
    print(json.dumps({
        "package": "fer", "version": getattr(fer, "__version__", "unknown"),
        "images_per_s": round(count / elapsed, 2), "faces_per_s": round(faces / elapsed, 2),
        "faces_per_image": faces / count,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
