"""The NKF ablation on FERPlus Valid: each row is one `keyfer train` command.

    python -m tools.ablation [--rows NAME ...] [--epochs N]
        -> runs/ablation/<row>/, docs/results/ablation.json and docs/results/ablation.md
    python -m tools.ablation --rescore     # add the perturbed-landmark accuracy to every row

Rows that exist in docs/results/ablation.json are kept unless named with --rows.
"""

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from keyfer.metrics.classification import SUMMARY_METRICS
from keyfer.train.cached import CachedData, build_head, head_logits
from keyfer.train.checkpoint import load_checkpoint
from keyfer.train.run import source_caches
from keyfer.train.sources import experiment_sources

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs/results/ablation.json"
NONE = ["model.rkfa=none", "train.regularization=none"]
N3000 = ["train_subset=3000", "model.dim=16", "train.regularization=consistency"]
BOTH = ["model.appearance=both"]
L321 = "model.appearance_taps=[level3,level2,level1]"  # the taps these rows ran with
ROWS = {
    "global-only": ["model.use_keypoint_features=false", *NONE],
    "kf": NONE,
    "kf+reg-augment": ["model.rkfa=none", "train.regularization=augment"],
    "kf+reg-consistency": ["model.rkfa=none", "train.regularization=consistency"],
    "kf+rkfa-channel": ["model.rkfa=channel", "train.regularization=none"],
    "kf+rkfa-keypoint": ["model.rkfa=keypoint", "train.regularization=none"],
    "full-keypoint-consistency": ["model.rkfa=keypoint", "train.regularization=consistency"],
    "full-both-consistency": ["model.rkfa=both", "train.regularization=consistency"],
    "full-keypoint-augment": ["model.rkfa=keypoint", "train.regularization=augment"],
    "full-probability-labels": ["train.label_mode=probability", "train.regularization=consistency"],
    # 68 versus 468 keypoints, on the 3,000-image training subset of the quick config.
    "ibug68-n3000-d16": N3000,
    "mesh468-n3000-d16": [*N3000, "model.keypoints=mesh468"],
    # The appearance branch (dlib's ResNet, frozen, cached) fused with the FaceMesh KFs.
    "appearance-global-n3000-d16": [*N3000, "model.appearance=global", L321],
    "appearance-kf-n3000-d16": [*N3000, "model.appearance=keypoints", L321],
    "appearance-both-n3000-d16": [*N3000, *BOTH, L321],
    "appearance-both-replace-n3000-d16": [*N3000, *BOTH, L321, "model.appearance_global=replace"],
    "appearance-both-l3l2-n3000-d16": [*N3000, *BOTH, "model.appearance_taps=[level3,level2]"],
    # The shipped recipe (KF + RKFA keypoint + augment) with the appearance branch: v2.
    "full-appearance-both": BOTH,
}
# Frozen versus fine-tuned FaceMesh: image-level training on the quick config's 3,000 images,
# both starting from the quick run's head (run `keyfer train quick` first).
IMAGES = ["train.engine=images", "train.epochs=2", "train.batch_size=32", "train.lr=0.0003",
          "train.init_from=runs/quick/checkpoint.pt"]  # fmt: skip
QUICK_ROWS = {
    "images-frozen-n3000": IMAGES,
    "images-finetuned-n3000": [*IMAGES, "model.finetune_alignment=true"],
}
ROWS.update(QUICK_ROWS)


def command(row: str, epochs: int | None) -> list[str]:
    sets = ROWS[row] + ([f"train.epochs={epochs}"] if epochs else [])
    config = "quick" if row in QUICK_ROWS else "ferplus"
    args = ["keyfer", "train", config, "--out", f"runs/ablation/{row}"]
    for value in sets:
        args += ["--set", value]
    return args


def perturbed_accuracy(checkpoint: Path) -> dict:
    """Valid accuracy of a cached-engine row with every landmark perturbed (the cache's view)."""
    experiment, state = load_checkpoint(checkpoint)
    head = build_head(experiment.model)
    head.load_state_dict(state["head"])
    (source,) = experiment_sources(experiment)
    cache, appearance = source_caches(experiment, source, str(source.source.eval_split))
    valid = CachedData.load(cache, experiment.model, appearance)
    predictions = head_logits(head, valid, perturbed=True).argmax(1)
    accuracy = float((predictions == valid.labels).float().mean())
    return {"sigma": experiment.train.sigma, "accuracy": accuracy}


def write_markdown(results: dict) -> None:
    lines = [
        "# NKF ablation on FERPlus Valid",
        "",
        "Made by `python -m tools.ablation`; each row is the command shown (raw numbers in",
        "`ablation.json`, logs in `runs/ablation/<row>/train.log`, not committed). All rows but",
        "the `images-*` ones train heads on cached Keypoint Features of a frozen FaceMesh; one",
        "seed each. The `appearance-*` rows add the frozen appearance branch (dlib's",
        "face-recognition ResNet on the chip FaceMesh's landmarks align, its own cached features):",
        "`global` its pooled feature, `kf` its Keypoint Features at the same 68 landmarks, `both`",
        "the two; `replace` drops FaceMesh's global feature, `l3l2` leaves out the 4x4 `level1`",
        "map.",
        "*Perturbed* is the accuracy when every Valid landmark is moved by N(0, (0.05 IOD)^2),",
        "the robustness that KF regularization is for.",
        "",
        "| row | accuracy | + mirror TTA | perturbed | mean class acc. | macro-F1 | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, r in results.items():
        perturbed = r.get("accuracy_perturbed_landmarks", {}).get("accuracy")
        shown = f"{perturbed:.4f}" if perturbed is not None else "n/a"
        lines.append(
            f"| {row} | {r['accuracy']:.4f} | {r['accuracy_mirror_tta']:.4f} | {shown} | "
            f"{r['mean_class_accuracy']:.4f} | {r['macro_f1']:.4f} | `{r['command']}` |"
        )
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="*", default=[], choices=list(ROWS))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--rescore", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for row in args.rows:
        argv = command(row, args.epochs)
        print("$", shlex.join(argv), flush=True)
        keyfer = str(Path(sys.executable).with_name("keyfer"))
        subprocess.run([keyfer, *argv[1:]], cwd=ROOT, check=True)
        metrics = json.loads((ROOT / f"runs/ablation/{row}/metrics.json").read_text())
        results[row] = {
            "command": shlex.join(argv),
            **{k: metrics[k] for k in SUMMARY_METRICS if k in metrics},
        }
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    if args.rescore:
        for row, r in results.items():
            checkpoint = ROOT / f"runs/ablation/{row}/checkpoint.pt"
            if row not in QUICK_ROWS and "accuracy_perturbed_landmarks" not in r:
                r["accuracy_perturbed_landmarks"] = perturbed_accuracy(checkpoint)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)


if __name__ == "__main__":
    main()
