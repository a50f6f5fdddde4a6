"""Multi-domain heads on frozen-backbone caches: the default-model candidates and the
leave-one-domain-out (LODO) rows of docs/results/generalization.md.

Every run is the shipped ``multi_domain`` recipe (FERPlus, SFEW, TFEID, muxspace; frozen FaceMesh
and dlib appearance branch; heads trained on cached features), changed only as its name says:

- ``all-gray3``: the recipe as shipped; ``all-rgb``: ``multi_domain_rgb`` (colour input);
- ``all-gray3-natural``: sources still drawn by weight, but each source's images uniformly
  (``balanced_sampler: false``: its classes at their natural frequencies);
- ``all-gray3-natural-ferplus2``: ``all-gray3-natural`` with FERPlus at weight 2 (2/5 of the
  draws instead of 1/4), added after ``all-gray3-natural`` missed the FERPlus condition of the
  default-model rule by two images;
- ``lodo-<domain>``: the recipe without that source, scored on all of the left-out domain's
  images (both committed splits; FERPlus: Valid, since Test is not here);
- ``finetune-natural``: ``all-gray3-natural`` with dlib's ResNet fine-tuned: the image engine
  (augmented crops, ``DOMAIN_AUGMENT`` on top of the default augmentation), the head started
  from ``all-gray3-natural``'s, the head at 3e-4 and the ResNet at 1e-4, batches of 128.

- ``upper-natural-ferplus2``: ``all-gray3-natural-ferplus2`` (keyfer-multidomain) with dlib's
  upper levels (level2, level1, level0) fine-tuned on cached level3 maps (the cached engine with
  ``finetune_appearance``: no pixel augmentation), the head started from that run's, the head
  at 3e-4 and the levels at 1e-4, batches of 128;
- ``head-natural-ferplus2``: its control, the same run with dlib frozen (the head alone trained
  on, with the same start, schedule and batches).

``shipped NAME`` scores a shipped FERPlus-only model (``keyfer-ferplus``) the same way, for the
baseline rows.

Runs go to ``runs/domains/<name>`` (``train.log``, ``metrics.json``, ``checkpoint.pt``); the
left-out domain is scored from its Keypoint-Feature and appearance caches (the same crops and
frozen networks as ``keyfer eval``, the features stored in fp16), restricted to its classes.

    python studies/2026-12-domains/domains.py run all-gray3 --data-root $KEYFER_DATA
    python studies/2026-12-domains/domains.py score lodo-sfew --data-root $KEYFER_DATA
    python studies/2026-12-domains/domains.py shipped keyfer-ferplus --data-root $KEYFER_DATA
    python studies/2026-12-domains/domains.py table > docs/results/generalization.json
    python studies/2026-12-domains/domains.py markdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import yaml

from keyfer.data.augment import DOMAIN_AUGMENT
from keyfer.data.labels import CLASSES
from keyfer.evaluate import class_mask
from keyfer.metrics.classification import classification_report
from keyfer.models.registry import create_model
from keyfer.nkf.model import NKFModel
from keyfer.train.cached import CachedData, head_logits
from keyfer.train.config import CONFIGS_DIR, Experiment
from keyfer.train.run import crops_for, source_caches, train_experiment
from keyfer.train.sources import experiment_sources, source_data

DOMAINS = ("ferplus", "sfew", "tfeid", "muxspace")
RUNS = Path("runs/domains")


def experiment_dict(name: str, epochs: int | None) -> dict:
    """The config of run ``name`` as a mapping (see the module docstring)."""
    recipe = "multi_domain_rgb" if name == "all-rgb" else "multi_domain"
    config = yaml.safe_load((CONFIGS_DIR / f"{recipe}.yaml").read_text(encoding="utf-8"))
    config["name"] = name
    config["cache_dir"] = os.environ.get("KEYFER_CACHE", ".cache/kf")
    if name.startswith("lodo-"):
        left_out = name.removeprefix("lodo-")
        config["sources"] = [s for s in config["sources"] if s["dataset"] != left_out]
    if "-natural" in name:
        config["train"]["balanced_sampler"] = False
    if name.endswith("-ferplus2"):
        config["sources"][0]["weight"] = 2.0  # FERPlus, first of the recipe's sources
    if name.startswith("finetune-"):
        config["model"]["finetune_appearance"] = True
        config["train"].update(
            engine="images",
            init_from=str(RUNS / "all-gray3-natural" / "checkpoint.pt"),
            lr=3e-4,
            batch_size=128,
            images={"augment": dict(DOMAIN_AUGMENT), "appearance_lr": 1e-4, "num_workers": 1},
        )
    if name.startswith(("upper-", "head-")):
        config["model"]["finetune_appearance"] = name.startswith("upper-")
        config["train"].update(
            init_from=str(RUNS / "all-gray3-natural-ferplus2" / "checkpoint.pt"),
            lr=3e-4,
            batch_size=128,
            images={"appearance_lr": 1e-4},
        )
    if epochs is not None:
        config["train"]["epochs"] = epochs
    return config


def left_out_splits(domain: str) -> tuple[str, ...]:
    """The splits that make up 'all of its images' for a left-out domain."""
    return ("valid",) if domain == "ferplus" else ("train", "valid")


def score_left_out(name: str) -> dict:
    """The report of run ``lodo-<domain>`` on all of the left-out domain's images."""
    domain = name.removeprefix("lodo-")
    model = create_model(RUNS / name / "checkpoint.pt")
    return score_cached(model, domain, left_out_splits(domain))


def score_cached(model: NKFModel, domain: str, splits: tuple[str, ...]) -> dict:
    """The report of a frozen-backbone gray3 ``model`` on ``splits`` of ``domain``, from the
    caches of the ``multi_domain`` recipe, restricted to the domain's classes."""
    experiment = Experiment.from_dict(experiment_dict("all-gray3", None))
    source = next(s for s in experiment.sources if s.dataset == domain)
    data = source_data(source)
    logits, labels, left_out = [], [], 0
    for split in splits:
        kf_cache, appearance = source_caches(experiment, data, split)
        rows = CachedData.load(kf_cache, model.config, appearance)
        left_out += sum(kf_cache.meta.get("left_out", {}).values())
        logits.append(head_logits(model.head, rows))
        labels.append(rows.labels)
    mask, restricted = class_mask(CLASSES, data.classes)
    predictions = (torch.cat(logits) + mask).argmax(1)
    report = classification_report(torch.cat(labels).numpy(), predictions.numpy(), CLASSES)
    report.update(domain=domain, splits=list(splits), left_out=left_out)
    report["restricted_to"] = restricted
    return report


def score_shipped(name: str) -> dict:
    """A shipped model's reports on each domain's valid split and on all of its images."""
    model = create_model(name)
    return {
        domain: {
            "valid": score_cached(model, domain, ("valid",)),
            "all": score_cached(model, domain, left_out_splits(domain)),
        }
        for domain in DOMAINS
    }


def table() -> dict:
    """Every finished run's in-domain valid accuracies and, for LODO runs, the left-out score."""
    rows = {}
    for run in sorted(RUNS.iterdir()):
        metrics_path = run / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        row = {
            "valid": {name: d["accuracy"] for name, d in metrics["domains"].items()},
            "valid_mean_class_accuracy": {
                name: d["mean_class_accuracy"] for name, d in metrics["domains"].items()
            },
            "mean_domain_accuracy": metrics["mean_domain_accuracy"],
            "temperature": metrics["temperature"],
            "ece_before": metrics["ece_before"],
            "ece_after": metrics["ece_after"],
        }
        left_out = run / "left_out.json"
        if left_out.is_file():
            row["left_out"] = json.loads(left_out.read_text())
        rows[run.name] = row
    return rows


def markdown(rows: dict, shipped: dict) -> str:
    """The tables of docs/results/generalization.md from :func:`table`'s rows and
    :func:`score_shipped`'s report of ``keyfer-ferplus``."""

    def cells(values: list[float]) -> str:
        return " | ".join(f"{v:.4f}" for v in values)

    lines = [
        "| model | " + " | ".join(f"{d} valid" for d in DOMAINS) + " | mean |",
        "|---" * (len(DOMAINS) + 2) + "|",
    ]
    base = [shipped[d]["valid"]["accuracy"] for d in DOMAINS]
    lines.append(f"| keyfer-ferplus (FERPlus only) | {cells(base)} | {sum(base) / len(base):.4f} |")
    for name, row in rows.items():
        if name.startswith("lodo-"):
            continue
        values = [row["valid"][d] for d in DOMAINS]
        lines.append(f"| {name} | {cells(values)} | {row['mean_domain_accuracy']:.4f} |")
    lines += [
        "",
        "| left out | its images scored | left out (no face) | accuracy | mean class accuracy "
        "| keyfer-ferplus on the same images (accuracy, mean class accuracy) "
        "| in-domain valid of the others (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for domain in DOMAINS:
        row = rows.get(f"lodo-{domain}")
        if row is None:
            continue
        out = row["left_out"]
        others = [v for d, v in row["valid"].items() if d != domain]
        lines.append(
            f"| {domain} ({'+'.join(out['splits'])}) | {out['n']} | {out['left_out']} | "
            f"{out['accuracy']:.4f} | {out['mean_class_accuracy']:.4f} | "
            f"{shipped[domain]['all']['accuracy']:.4f}, "
            f"{shipped[domain]['all']['mean_class_accuracy']:.4f} | "
            f"{sum(others) / len(others):.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "crops", "score", "shipped", "table", "markdown"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--data-root")
    args = parser.parse_args()
    if args.data_root:
        os.environ["KEYFER_DATA"] = args.data_root
    if args.action == "markdown":
        shipped = json.loads((RUNS / "shipped-keyfer-ferplus.json").read_text())
        print(markdown(table(), shipped))
        return
    if args.action == "table":
        json.dump(table(), sys.stdout, indent=1)
        print()
        return
    if args.action == "shipped":
        out = RUNS / f"shipped-{args.name}.json"
        out.write_text(json.dumps(score_shipped(args.name), indent=1) + "\n")
        return
    if args.action == "crops":  # the image engine's crop caches, built ahead of its run
        experiment = Experiment.from_dict(experiment_dict(args.name, args.epochs))
        for data in experiment_sources(experiment):
            crops_for(experiment, data, str(data.source.split), data.train)
            crops_for(experiment, data, str(data.source.eval_split), data.valid)
        return
    if args.action == "run":
        experiment = Experiment.from_dict(experiment_dict(args.name, args.epochs))
        train_experiment(experiment, RUNS / args.name)
    if args.name.startswith("lodo-"):
        report = score_left_out(args.name)
        (RUNS / args.name / "left_out.json").write_text(json.dumps(report, indent=1) + "\n")
        print(args.name, "left-out accuracy", round(report["accuracy"], 4))


if __name__ == "__main__":
    main()
