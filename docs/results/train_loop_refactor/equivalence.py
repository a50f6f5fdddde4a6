"""Before/after check of the shared training loop (issue 13): with the same seeds, both engines
must give bit-identical epoch losses (repr of the float) and checkpoint states (sha256 of the
tensors' bytes). Three cached-engine runs on random cache rows (CachedTrainer), and five
end-to-end runs of train_experiment on the FERPlus test fixture, given as configs of keyfer 0.2.0's
key layout (read through the config migration after the change). One CPU thread.

    python docs/results/train_loop_refactor/equivalence.py OUT.json
"""

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from keyfer.nkf.config import ModelConfig
from keyfer.train.cached import CachedData, CachedTrainer
from keyfer.train.config import Experiment, TrainConfig
from keyfer.train.images import ImageTrainer
from keyfer.train.run import train_experiment

torch.set_num_threads(1)
FIXTURE = Path(__file__).parents[3] / "tests/data/ferplus_fixture"
LOSSES: list[str] = []


def record(cls):
    original = cls.run_epoch

    def run_epoch(self):
        loss = original(self)
        LOSSES.append(repr(loss))
        return loss

    cls.run_epoch = run_epoch


record(CachedTrainer)
record(ImageTrainer)


def digest(value) -> str:
    h = hashlib.sha256()

    def walk(v):
        if isinstance(v, torch.Tensor):
            h.update(
                v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                if v.numel()
                else b""
            )
            h.update(str(v.dtype).encode())
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                walk(v[k])
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        else:
            h.update(repr(v).encode())

    walk(value)
    return h.hexdigest()[:16]


def synthetic(n=29, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 8, (n,), generator=g)
    return CachedData(
        torch.randn(n, 4, 68, 352, generator=g).half(),
        torch.randn(n, 2, 128, generator=g).half(),
        labels,
        torch.softmax(torch.randn(n, 8, generator=g), 1),
    )


results = {}
SMALL = ModelConfig(dim=8, hidden=16)
for name, train in {
    "cached-consistency": TrainConfig(epochs=3, batch_size=5),
    "cached-augment-balanced-soft": TrainConfig(
        epochs=3,
        batch_size=7,
        regularization="augment",
        balanced_sampler=True,
        label_mode="probability",
    ),
    "cached-none-nomirror": TrainConfig(
        epochs=3, batch_size=4, regularization="none", mirror=False
    ),
}.items():
    LOSSES.clear()
    trainer = CachedTrainer(SMALL, train, synthetic())
    for _ in range(train.epochs):
        trainer.run_epoch()
    state = trainer.state_dict()
    results[name] = {
        "losses": list(LOSSES),
        **{k: digest(state[k]) for k in ("head", "optimizer", "scheduler", "generator")},
    }

tmp = Path(tempfile.mkdtemp())
root = tmp / "ferplus"
shutil.copytree(FIXTURE, root)
shutil.copytree(root / "data/FER2013Train", root / "data/FER2013Valid")
base = {
    "name": "tiny",
    "root": str(root),
    "cache_dir": str(tmp / "cache"),
    "model": {"dim": 8, "hidden": 16},
}
runs = {
    "e2e-cached": {"train": {"epochs": 2, "batch_size": 4}},
    "e2e-cached-appearance": {
        "model": {"appearance": "both", "appearance_taps": ["level3", "level2"]},
        "train": {"epochs": 2, "batch_size": 4, "regularization": "augment"},
    },
    "e2e-images-augmentation": {
        "train": {
            "engine": "images",
            "epochs": 1,
            "batch_size": 2,
            "num_workers": 0,
            "regularization": "augment",
            "augmentation": {"rotation": 5, "erase_prob": 0.5},
        }
    },
    "e2e-images-finetune-alignment": {
        "model": {"finetune_alignment": True},
        "train": {"engine": "images", "epochs": 1, "batch_size": 2, "num_workers": 0},
    },
    "e2e-images-appearance-freeze-noaugment": {
        "model": {"appearance": "keypoints", "finetune_appearance": True},
        "train": {
            "engine": "images",
            "epochs": 2,
            "batch_size": 2,
            "num_workers": 0,
            "appearance_freeze_epochs": 1,
            "augment": False,
            "regularization": "augment",
        },
    },
}
for name, change in runs.items():
    data = json.loads(json.dumps(base))
    for section, values in change.items():
        data.setdefault(section, {}).update(values)
    LOSSES.clear()
    out = tmp / name
    metrics = train_experiment(Experiment.from_dict(data), out)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    results[name] = {
        "losses": list(LOSSES),
        "metrics": metrics,
        **{
            k: digest(state[k])
            for k in ("head", "facemesh", "appearance", "optimizer", "scheduler", "generator")
            if k in state
        },
    }
Path(sys.argv[1]).write_text(json.dumps(results, indent=1) + "\n")
shutil.rmtree(tmp)
print(json.dumps({k: v["losses"] for k, v in results.items()}, indent=1))
