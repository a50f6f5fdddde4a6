"""Write the golden reference for examples/astronaut.png with the TFLite reference path.

keyfer's own geometry (letterbox, decoding, NMS, alignment) with MediaPipe's original networks run
by LiteRT. The golden test checks the PyTorch pipeline against it::

    python -m tools.make_golden   # -> tests/data/astronaut_golden.json
"""

import json
from pathlib import Path

from keyfer.faces.pipeline import FacePipeline
from keyfer.io.images import read_image
from tools.litert_reference import LiteRTBlazeFace, LiteRTFaceMesh

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    pipeline = FacePipeline()
    pipeline.detector.network = LiteRTBlazeFace()
    pipeline.facemesh = LiteRTFaceMesh()
    faces = pipeline(read_image(ROOT / "examples/astronaut.png"))
    golden = {
        "made_by": "python -m tools.make_golden (TFLite reference path, LiteRT interpreter)",
        "boxes": faces.boxes.tolist(),
        "presence": faces.presence.tolist(),
        "mesh": faces.mesh.tolist(),
    }
    out = ROOT / "tests/data/astronaut_golden.json"
    out.write_text(json.dumps(golden) + "\n")
    print(f"wrote {out} ({len(faces)} face)")


if __name__ == "__main__":
    main()
