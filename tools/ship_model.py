"""Ship a trained checkpoint as a registered model inside the package.

    python -m tools.ship_model runs/ferplus/checkpoint.pt --name keyfer-ferplus \
        --command "keyfer train ferplus"

Writes src/keyfer/models/<name>.safetensors (the head in fp16) and <name>.json (its record:
sha256, classes, preprocessing, config, temperature, data, licence, Valid metrics). Then check it
with `keyfer eval --model <name> --dataset ferplus --root ... --split valid`.
"""

import argparse
import hashlib
import json
from pathlib import Path

from safetensors.torch import save

from keyfer.metrics.classification import SUMMARY_METRICS
from keyfer.models.checkpoint import checkpoint_trained_on, read_checkpoint
from keyfer.models.registry import MODELS_DIR

TRAINING_DATA = (
    "FERPlus train split (FER2013 images with FER+ 10-annotator labels), majority protocol: "
    "25,045 images; selected on FERPlus Valid (3,191 images)"
)
LICENSE = (
    "Weights: Apache-2.0, trained on FER2013 images (research use only) with FER+ labels (MIT); "
    "includes MediaPipe FaceMesh (Apache-2.0)"
)
APPEARANCE_LICENSE = "; and dlib's face-recognition ResNet (public domain / CC0, Davis King)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--command", required=True, help="the command that trained it")
    parser.add_argument("--description", default="")
    args = parser.parse_args()
    state = read_checkpoint(args.checkpoint)
    model = state["model"]  # the classes, temperature and preprocessing it was trained with
    config = model["config"]
    if "facemesh" in state or "appearance" in state:
        raise SystemExit("shipping a fine-tuned FaceMesh or appearance branch is not supported yet")
    head = {k: v.half().contiguous() for k, v in state["head"].items()}
    data = save(head, metadata={"keyfer_model": args.name})
    weights = MODELS_DIR / f"{args.name}.safetensors"
    weights.write_bytes(data)
    metrics = state["metrics"]
    record = {
        "name": args.name,
        "description": args.description,
        "weights": weights.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "classes": list(model["classes"]),
        "preprocessing": {
            "color_mode": model["color_mode"],
            "input": "192x192 FaceMesh crop, RGB in [0, 1]",
            "photos": "MediaPipe ROI of each detected face (keyfer.faces.align)",
            "precrop_margin": model["margin"],
            "precrop_padding": model["padding"],
        },
        "config": config,
        "temperature": model["temperature"],
        "training_data": TRAINING_DATA,
        "trained_on": [list(pair) for pair in checkpoint_trained_on(state)],
        "license": LICENSE + ("" if config["appearance"] == "none" else APPEARANCE_LICENSE),
        "metrics": {"ferplus_valid": {k: metrics[k] for k in SUMMARY_METRICS if k in metrics}},
        "reproduce": args.command,
    }
    (MODELS_DIR / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {weights} ({len(data) / 2**20:.1f} MiB) and its record")


if __name__ == "__main__":
    main()
