"""Score ``keyfer landmarks --json`` records against 300-W style annotations (AFW: 337 faces).

Used by ``keyfer eval-landmarks``; never imported by ``import keyfer``.

Conventions: the ``.pts`` files are 1-based, so a ground-truth point is ``x_pts - 0.5``, the
frame of keyfer's output (a pixel's centre at integer + 0.5). The IOD is the ground-truth
distance between iBUG points 37 and 46 (1-based, the outer eye corners); a face's NME is its mean
point error divided by its IOD.

Matching: an annotated face is found when a detected box contains the centre of its 68 points
(the midpoint of their bounding box) and is 0.5 to 2.5 times as wide as those points. It is
matched to the valid box whose centre is closest to that centre. AFW holds multi-face photos as
byte-identical copies ``X_1.jpg``, ``X_2.jpg``, ..., one annotated face each: recall uses each
``.pts`` file's own record, false positives the first record of each unique photo.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keyfer.errors import KeyferError

JAW = np.arange(0, 17)  # iBUG 1-17
INNER = np.arange(17, 68)  # iBUG 18-68
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45  # iBUG 37 and 46
WIDTH_RATIO = (0.5, 2.5)
RECORD_SCHEMAS = (1, 2, 3)  # scored alike: 3 adds the faces' "found_by", not read here

Record = dict[str, Any]


class LandmarkEvalError(KeyferError):
    """An annotation or records file cannot be read, or the two do not cover the same images."""


@dataclass(frozen=True)
class AnnotatedFace:
    """One annotated face: ``name`` its image's file name, ``photo`` the unique-photo id and
    ``points`` (68, 2) in pixels, a pixel's centre at integer + 0.5."""

    name: str
    photo: str
    points: np.ndarray

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def centre(self) -> np.ndarray:
        """(2,) midpoint of the points' bounding box."""
        return (self.points.min(0) + self.points.max(0)) / 2

    @property
    def width(self) -> float:
        return float(np.ptp(self.points[:, 0]))

    @property
    def iod(self) -> float:
        """Distance between the outer eye corners (iBUG 37 and 46), in pixels."""
        return float(np.linalg.norm(self.points[RIGHT_EYE_OUTER] - self.points[LEFT_EYE_OUTER]))


@dataclass(frozen=True)
class MatchedFace:
    """A found face and its detection's ``landmarks68`` (68, 2) and ``mesh`` (468, 3)."""

    truth: AnnotatedFace
    landmarks68: np.ndarray
    mesh: np.ndarray


def photo_id(stem: str) -> str:
    """AFW file stem -> unique-photo id (the ``_N`` copy suffix stripped)."""
    return re.sub(r"_\d+$", "", stem)


def read_pts(path: Path) -> np.ndarray:
    """A 300-W ``.pts`` file -> (68, 2) points, a pixel's centre at integer + 0.5."""
    try:
        body = path.read_text().split("{")[1].split("}")[0]
        points = np.array(body.split(), dtype=np.float64).reshape(-1, 2)
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as error:
        raise LandmarkEvalError(f"{path}: not a 300-W .pts file ({error})") from error
    if points.shape != (68, 2):
        raise LandmarkEvalError(f"{path}: expected 68 points, found {len(points)}")
    return points - 0.5


def read_annotations(folder: Path) -> list[AnnotatedFace]:
    """Every ``.pts`` file of ``folder`` (an image ``<stem>.jpg`` each), sorted by file name."""
    files = sorted(folder.glob("*.pts"))
    if not files:
        raise LandmarkEvalError(f"no .pts annotations in {folder}; give the AFW folder")
    return [AnnotatedFace(p.stem + ".jpg", photo_id(p.stem), read_pts(p)) for p in files]


def read_records(path: Path) -> dict[str, Record]:
    """A ``keyfer landmarks --json`` output -> {image file stem: record}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LandmarkEvalError(f"cannot read records {path}: {error}") from error
    if not isinstance(data, dict) or data.get("schema_version") not in RECORD_SCHEMAS:
        found = data.get("schema_version") if isinstance(data, dict) else None
        raise LandmarkEvalError(
            f"{path}: not a `keyfer landmarks --json` output (schema_version {found}); "
            "make one with keyfer landmarks DIR --json FILE"
        )
    return {Path(r["path"]).stem: r for r in data["records"]}


def box_matches(box: list[float], truth: AnnotatedFace) -> bool:
    """Whether a detected box ``[x0, y0, x1, y1]`` contains the annotation's centre and has a
    plausible width."""
    x0, y0, x1, y1 = box
    cx, cy = truth.centre
    ratio = (x1 - x0) / truth.width
    return x0 <= cx <= x1 and y0 <= cy <= y1 and WIDTH_RATIO[0] <= ratio <= WIDTH_RATIO[1]


def match_face(record: Record, truth: AnnotatedFace) -> MatchedFace | None:
    """The valid detection whose box centre is closest to the annotation's centre, or None."""
    candidates = [f for f in record["faces"] if box_matches(f["box"], truth)]
    if not candidates:
        return None

    def distance(face: Record) -> float:
        x0, y0, x1, y1 = face["box"]
        return float(np.hypot((x0 + x1) / 2 - truth.centre[0], (y0 + y1) / 2 - truth.centre[1]))

    best = min(candidates, key=distance)
    return MatchedFace(
        truth, np.asarray(best["landmarks68"], float), np.asarray(best["mesh"], float)
    )


def point_errors(points: np.ndarray, truth: AnnotatedFace) -> np.ndarray:
    """(..., 68, 2) predicted points -> (..., 68) errors divided by the annotation's IOD."""
    return np.linalg.norm(points - truth.points, axis=-1) / truth.iod


def _by_photo(faces: list[AnnotatedFace]) -> dict[str, list[AnnotatedFace]]:
    photos: dict[str, list[AnnotatedFace]] = defaultdict(list)
    for face in faces:
        photos[face.photo].append(face)
    return photos


def false_positives(
    records: dict[str, Record], faces: list[AnnotatedFace]
) -> tuple[list[int], int]:
    """The false-positive count of each unique photo (its first file's record, photos sorted)
    and the number of detections counted."""
    by_photo = _by_photo(faces)
    counts, detections = [], 0
    for photo in sorted(by_photo):
        annotated = by_photo[photo]
        record = records[Path(min(f.name for f in annotated)).stem]
        detections += len(record["faces"])
        counts.append(
            sum(not any(box_matches(d["box"], f) for f in annotated) for d in record["faces"])
        )
    return counts, detections


def duplicates_differ(records: dict[str, Record], faces: list[AnnotatedFace]) -> list[str]:
    """Photos whose byte-identical copies got different detections (should be none)."""
    return sorted(
        photo
        for photo, copies in _by_photo(faces).items()
        if any(records[f.stem]["faces"] != records[copies[0].stem]["faces"] for f in copies)
    )


def summarise(nme: np.ndarray) -> dict[str, float]:
    """(F,) per-face NMEs -> mean, median, the fraction below 0.1 and the maximum."""
    return {
        "mean": float(nme.mean()),
        "median": float(np.median(nme)),
        "fraction_below_0.1": float((nme < 0.1).mean()),
        "max": float(nme.max()),
    }


def score_landmarks(
    records: dict[str, Record], faces: list[AnnotatedFace]
) -> tuple[dict[str, Any], list[MatchedFace]]:
    """Recall, false positives and NME68 (all, inner 51, jaw 17) of one run, and its matches."""
    missing = [f.name for f in faces if f.stem not in records]
    if missing:
        raise LandmarkEvalError(
            f"{len(missing)} annotated images have no record, e.g. {missing[:3]}; run keyfer "
            "landmarks on the whole annotation folder"
        )
    errors = sorted(f.name for f in faces if records[f.stem].get("error"))
    matches = [m for f in faces if (m := match_face(records[f.stem], f))]
    if not matches:
        raise LandmarkEvalError("no annotated face was found in the records")
    fps, detections = false_positives(records, faces)
    err = np.stack([point_errors(m.landmarks68, m.truth) for m in matches])  # (F, 68)
    metrics = {
        "n_annotated_faces": len(faces),
        "found": len(matches),
        "recall": len(matches) / len(faces),
        "unique_photos": len(fps),
        "detections_on_unique_photos": detections,
        "false_positives_total": int(sum(fps)),
        "fp_per_photo": float(np.mean(fps)),
        "images_with_errors": errors,
        "duplicate_photos_with_differing_outputs": duplicates_differ(records, faces),
        "nme68": {"count": len(matches), **summarise(err.mean(1))},
        "nme_inner51": summarise(err[:, INNER].mean(1)),
        "nme_jaw17": summarise(err[:, JAW].mean(1)),
        "per_point_mean_error": [round(float(e), 5) for e in err.mean(0)],
        "per_face_nme68": {
            m.truth.name: round(float(e), 5) for m, e in zip(matches, err.mean(1), strict=True)
        },
    }
    return metrics, matches


def summary_line(metrics: dict[str, Any]) -> str:
    """One line of the headline numbers of :func:`score_landmarks`'s metrics."""
    return (
        f"found {metrics['found']} / {metrics['n_annotated_faces']} "
        f"({100 * metrics['recall']:.1f}%), FP/photo {metrics['fp_per_photo']:.3f}, "
        f"NME68 mean {metrics['nme68']['mean']:.4f} median {metrics['nme68']['median']:.4f}, "
        f"inner {metrics['nme_inner51']['mean']:.4f}, jaw {metrics['nme_jaw17']['mean']:.4f}"
    )


def add_variant(
    out: Path, variant: str, command: str, records: Path, metrics: dict[str, Any]
) -> dict[str, Any]:
    """Add or replace run ``variant`` in the results JSON ``out``; returns the file's content."""
    data = json.loads(out.read_text()) if out.exists() else {"variants": {}}
    data["variants"][variant] = {"command": command, "results_file": str(records), **metrics}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return data


def variants_markdown(data: dict[str, Any]) -> str:
    """Every run of a results JSON as Markdown: one table row each, then each run's worst points."""
    lines = [
        "# keyfer landmarks on AFW",
        "",
        "Made by `keyfer eval-landmarks RECORDS.json ANNOTATIONS` from `keyfer landmarks "
        "ANNOTATIONS --json RECORDS.json` (all files; each .pts file is scored against its own "
        "record). Full numbers, the per-point mean errors and each face's NME are in the "
        "results JSON.",
        "",
        "- A face is found when a detected box contains the midpoint of its 68 gt points' "
        "bounding box and the box is 0.5 to 2.5 times as wide as the gt points.",
        "- FP / photo: detections matching no annotated face, averaged over the unique "
        "photos (first file of each photo).",
        "- NME: mean point error of the found faces over the gt distance between iBUG points 37 "
        "and 46 (1-based); gt is the .pts coordinates minus 0.5. Inner = iBUG 18-68, jaw = 1-17.",
        "",
        "| variant | command | found | recall | FP / photo | NME68 mean | NME68 median | "
        "NME < 0.1 | inner 51 mean | jaw 17 mean |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in data["variants"].items():
        lines.append(
            f"| {name} | `{v['command']}` | {v['found']} / {v['n_annotated_faces']} | "
            f"{v['recall']:.1%} | {v['fp_per_photo']:.3f} | {v['nme68']['mean']:.4f} | "
            f"{v['nme68']['median']:.4f} | {v['nme68']['fraction_below_0.1']:.1%} | "
            f"{v['nme_inner51']['mean']:.4f} | {v['nme_jaw17']['mean']:.4f} |"
        )
    lines += ["", "Worst points (1-based iBUG number: mean normalised error):", ""]
    for name, v in data["variants"].items():
        per_point = np.array(v["per_point_mean_error"])
        worst = np.argsort(-per_point)[:6]
        lines.append(f"- {name}: " + ", ".join(f"{i + 1}: {per_point[i]:.3f}" for i in worst))
    return "\n".join(lines) + "\n"
