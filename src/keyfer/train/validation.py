"""Scoring a run on its sources' eval splits: each domain on its own, their mean, and the
temperature fitted on one half of the eval rows and judged on the other.

Each row's prediction is restricted to its source's classes (as ``keyfer eval`` restricts a
model to a dataset's classes). The temperature calibrates all the model's outputs, as
``keyfer predict`` reports them: it is fitted on half A of the eval rows and the ECE before and
after it is measured on half B (the halves are drawn with seed 0, within each source, so each
source is split in two), never on the logits it was fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from keyfer.data.labels import CLASSES
from keyfer.evaluate import class_mask
from keyfer.metrics.calibration import fit_temperature
from keyfer.metrics.classification import classification_report, expected_calibration_error
from keyfer.train.sources import SourceData

CALIBRATION_SEED = 0
"""The seed of the draw that splits each source's eval rows into the calibration halves."""


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else 0.0


@dataclass
class ValidRows:
    """The scored eval-split rows of all sources: (N,) ``labels`` and ``source`` indices, the
    sources' ``names`` and their (S, n_classes) additive class ``masks`` (-inf on the classes a
    source lacks), and each source's ``restricted`` classes (None where it has all)."""

    labels: torch.Tensor
    source: torch.Tensor
    names: list[str]
    masks: torch.Tensor
    restricted: list[list[str] | None]

    @classmethod
    def of(cls, sources: list[SourceData], labels: torch.Tensor, source: torch.Tensor) -> ValidRows:
        """The rows of ``sources``' eval splits with ``labels`` and ``source`` indices."""
        masks, restricted = zip(
            *(class_mask(CLASSES, data.classes) for data in sources), strict=True
        )
        return cls(
            labels, source, [data.name for data in sources], torch.stack(masks), list(restricted)
        )

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, n_classes) ``logits`` with each row's classes outside its source at -inf."""
        return logits + self.masks[self.source]

    def domain_accuracies(self, logits: torch.Tensor) -> dict[str, float]:
        """Each source's accuracy on its eval rows, from (N, n_classes) unrestricted logits."""
        correct = self.restrict(logits).argmax(1) == self.labels
        return {
            name: float(correct[self.source == s].float().mean())
            if (self.source == s).any()
            else 0.0
            for s, name in enumerate(self.names)
        }

    def report(
        self,
        logits: torch.Tensor,
        tta_logits: torch.Tensor,
        perturbed: tuple[float, torch.Tensor] | None,
    ) -> dict[str, Any]:
        """The metrics of a run from its (N, n_classes) unrestricted ``logits`` (and those with
        mirror TTA, and with ``perturbed`` landmarks: sigma and logits, for the cached engine):
        the report over all rows (:func:`classification_report` plus ``restricted_to``,
        ``accuracy_mirror_tta``, ``accuracy_perturbed_landmarks``), ``domains`` (each source's
        report on its own rows), ``mean_domain_accuracy`` and the calibration
        (:func:`calibration`), whose ``temperature``, ``ece_before`` and ``ece_after`` are also at
        the top."""
        predictions = self.restrict(logits).argmax(1)
        metrics = classification_report(self.labels.numpy(), predictions.numpy(), CLASSES)
        metrics["restricted_to"] = self.restricted[0] if len(self.names) == 1 else None
        metrics["accuracy_mirror_tta"] = _accuracy(self.restrict(tta_logits), self.labels)
        if perturbed is not None:
            sigma, moved = perturbed
            accuracy = _accuracy(self.restrict(moved), self.labels)
            metrics["accuracy_perturbed_landmarks"] = {"sigma": sigma, "accuracy": accuracy}
        domains = {}
        for s, name in enumerate(self.names):
            rows = self.source == s
            domain = classification_report(
                self.labels[rows].numpy(), predictions[rows].numpy(), CLASSES
            )
            domain["restricted_to"] = self.restricted[s]
            domain["accuracy_mirror_tta"] = _accuracy(
                self.restrict(tta_logits)[rows], self.labels[rows]
            )
            domains[name] = domain
        metrics["domains"] = domains
        metrics["mean_domain_accuracy"] = float(np.mean([d["accuracy"] for d in domains.values()]))
        metrics["calibration"] = calibration(logits, self.labels, self.source)
        for key in ("temperature", "ece_before", "ece_after"):
            metrics[key] = metrics["calibration"][key]
        return metrics


def accuracies_text(accuracies: dict[str, float]) -> str:
    """``{"ferplus": 0.8276, "sfew": 0.4909}`` -> ``"ferplus 0.8276, sfew 0.4909"``: each
    source's accuracy as the log and the CLI print it."""
    return ", ".join(f"{name} {value:.4f}" for name, value in accuracies.items())


def calibration_halves(source: torch.Tensor, seed: int = CALIBRATION_SEED) -> torch.Tensor:
    """(N,) bool, True for half A: of each source's rows (``source``, (N,) indices) a random
    half, rounded up, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    half_a = np.zeros(len(source), bool)
    for s in torch.unique(source).tolist():
        rows = np.flatnonzero(source.numpy() == s)
        half_a[rng.permutation(rows)[: (len(rows) + 1) // 2]] = True
    return torch.from_numpy(half_a)


def calibration(logits: torch.Tensor, labels: torch.Tensor, source: torch.Tensor) -> dict[str, Any]:
    """The temperature fitted on half A (:func:`calibration_halves`) of the (N, n_classes)
    unrestricted eval logits, and the ECE of half B before and after dividing by it:
    ``{fit_on, scored_on, n_fit, n_scored, temperature, ece_before, ece_after}``."""
    half_a = calibration_halves(source)
    half_b = ~half_a
    temperature = fit_temperature(logits[half_a], labels[half_a])
    scored, truth = logits[half_b], labels[half_b].numpy()
    return {
        "fit_on": f"half A of the eval splits (n={int(half_a.sum())}, seed {CALIBRATION_SEED})",
        "scored_on": f"half B of the eval splits (n={int(half_b.sum())})",
        "n_fit": int(half_a.sum()),
        "n_scored": int(half_b.sum()),
        "temperature": temperature,
        "ece_before": expected_calibration_error(F.softmax(scored, 1).numpy(), truth),
        "ece_after": expected_calibration_error(F.softmax(scored / temperature, 1).numpy(), truth),
    }
