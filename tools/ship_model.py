"""Ship a trained checkpoint as a registered model inside the package.

    python -m tools.ship_model runs/ferplus/checkpoint.pt --name keyfer-ferplus \
        --command "keyfer train ferplus"

Writes src/keyfer/models/<name>.safetensors (the head in fp16), <name>.<part>.safetensors (fp16)
for each network the run fine-tuned (``appearance``: dlib's ResNet; ``facemesh``) and <name>.json
(its record: sha256s, classes, preprocessing, config, temperature, data, licence, Valid
metrics). Then check it with
`keyfer eval --model <name> --dataset ferplus --root ... --split valid`.
"""

import argparse
import hashlib
import json
from pathlib import Path

from safetensors.torch import save

from keyfer.metrics.classification import SUMMARY_METRICS
from keyfer.models.checkpoint import (
    FINE_TUNABLE_PARTS,
    checkpoint_trained_on,
    read_checkpoint,
)
from keyfer.models.registry import MODELS_DIR

DATASETS = {
    "ferplus": "FERPlus (FER2013 images with FER+ 10-annotator labels, majority protocol)",
    "sfew": "SFEW 2.0 Train (film stills, Dhall et al.), keyfer's film split",
    "tfeid": "TFEID (posed portraits, posed labels), keyfer's performer split",
    "muxspace": "muxspace facial_expressions (crowd-labelled LFW and film faces), keyfer's "
    "person split",
}
"""Each dataset a model may be trained on, as its record names it."""
DATASET_TERMS = {
    "ferplus": "FER2013 images (research use only) with FER+ labels (MIT)",
    "sfew": "SFEW 2.0 images (research use only, under the database's licence agreement)",
    "tfeid": "TFEID images (research use only, under the database's terms)",
    "muxspace": "muxspace facial_expressions (Apache-2.0 repository; LFW images, research use)",
}
"""The terms each dataset comes with; a model trained on it derives from it."""
LICENSE = "Weights: Apache-2.0, derived from {data}; includes MediaPipe FaceMesh (Apache-2.0)"
APPEARANCE_LICENSE = "; and dlib's face-recognition ResNet (public domain / CC0, Davis King)"


MAX_FILE_MIB = 15


def write_weights(state: dict, name: str, path: Path) -> str:
    """Write a state dict to ``path`` in fp16 (safetensors); the file's sha256. A file over
    :data:`MAX_FILE_MIB` is refused (the package's weight budget)."""
    data = save({k: v.half().contiguous() for k, v in state.items()}, {"keyfer_model": name})
    if len(data) > MAX_FILE_MIB * 2**20:
        raise SystemExit(f"{path.name} would be {len(data) / 2**20:.1f} MiB, over {MAX_FILE_MIB}")
    path.write_bytes(data)
    print(f"wrote {path} ({len(data) / 2**20:.1f} MiB)")
    return hashlib.sha256(data).hexdigest()


def training_data(state: dict) -> tuple[str, str]:
    """(the training data, the licence text) of a checkpoint, from its experiment's sources."""
    sources = state["config"]["sources"]
    used = [f"{DATASETS[s['dataset']]}: {s['split']} split" for s in sources]
    selected = ", ".join(f"{s['dataset']} {s['eval_split']}" for s in sources)
    terms = "; ".join(dict.fromkeys(DATASET_TERMS[s["dataset"]] for s in sources))
    return "; ".join(used) + f"; selected on {selected}", LICENSE.format(data=terms)


def valid_metrics(metrics: dict) -> dict:
    """The record's metrics: each source's eval-split summary (``<dataset>_<split>``)."""
    sources = metrics.get("domains", {})
    if len(sources) < 2:
        return {"ferplus_valid": {k: metrics[k] for k in SUMMARY_METRICS if k in metrics}}
    summary = {
        f"{name}_valid": {k: d[k] for k in SUMMARY_METRICS if k in d} for name, d in sources.items()
    }
    summary["calibration"] = metrics["calibration"]
    return summary


def ship(
    checkpoint: Path, name: str, command: str, description: str = "", models_dir: Path = MODELS_DIR
) -> dict:
    """Write checkpoint ``checkpoint``'s weights (the head, and each fine-tuned network in a file
    of its own) and record into ``models_dir`` as model ``name``; the record."""
    state = read_checkpoint(checkpoint)
    model = state["model"]  # the classes, temperature and preprocessing it was trained with
    config = model["config"]
    weights = f"{name}.safetensors"
    sha256 = write_weights(state["head"], name, models_dir / weights)
    fine_tuned = {}
    for part in FINE_TUNABLE_PARTS:  # each shipped in a file of its own
        if part in state:
            file = f"{name}.{part}.safetensors"
            fine_tuned[part] = {
                "weights": file,
                "sha256": write_weights(state[part], name, models_dir / file),
            }
    data_text, license_text = training_data(state)
    record = {
        "name": name,
        "description": description,
        "weights": weights,
        "sha256": sha256,
        "fine_tuned": fine_tuned,
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
        "training_data": data_text,
        "trained_on": [list(pair) for pair in checkpoint_trained_on(state)],
        "license": license_text + ("" if config["appearance"] == "none" else APPEARANCE_LICENSE),
        "metrics": valid_metrics(state["metrics"]),
        "reproduce": command,
    }
    (models_dir / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--command", required=True, help="the command that trained it")
    parser.add_argument("--description", default="")
    args = parser.parse_args()
    ship(args.checkpoint, args.name, args.command, args.description)
    print(f"wrote the record {MODELS_DIR / (args.name + '.json')}")


if __name__ == "__main__":
    main()
