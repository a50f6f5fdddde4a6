"""Score a ``keyfer landmarks --json`` output against the AFW ground truth (337 annotated faces).

Usage::

    keyfer landmarks /work/shared/data/afw --json /tmp/afw_default.json
    python scripts/eval_afw.py /tmp/afw_default.json --afw /work/shared/data/afw \
        --out docs/results/afw_landmarks.json --variant default \
        --command "keyfer landmarks /work/shared/data/afw --json /tmp/afw_default.json" \
        --markdown docs/results/afw_landmarks.md

    # mapping study (nasal base check and a cross-validated mesh -> iBUG-68 fit):
    python scripts/eval_afw.py /tmp/afw_default.json --mapping-study \
        docs/results/ibug68_mapping_study.md

Conventions (docs METHOD.md section 2): the .pts files are 1-based, so a gt point is x_pts - 0.5,
the same frame as keyfer's output (pixel centres at integer + 0.5). IOD is the gt distance between
iBUG points 37 and 46 (1-based); NME is the mean point error divided by the IOD.

Matching: an annotated face is found when a detected box contains the centre of its 68 gt points
(the midpoint of their bounding box) and the box width is 0.5 to 2.5 times the gt points' width.
Each found face is matched to the valid box whose centre is closest to the gt centre. AFW holds
multi-face photos as byte-identical copies X_1.jpg, X_2.jpg, ..., one annotated face each: recall
uses each .pts file's own record, false positives use the first record of each unique photo.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyfer.faces.ibug68 import MESH_TO_IBUG68, NASAL_BASE

log = logging.getLogger("eval_afw")

N_AFW_FACES = 337
JAW = np.arange(0, 17)  # iBUG 1-17
INNER = np.arange(17, 68)  # iBUG 18-68
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45  # iBUG 37 and 46
WIDTH_RATIO = (0.5, 2.5)
N_NASAL_NEIGHBOURS = 10


@dataclass(frozen=True)
class GtFace:
    """One annotated face: ``name`` the image file name, ``photo`` the unique-photo id, ``pts``
    (68, 2) in pixels with centres at integer + 0.5."""

    name: str
    photo: str
    pts: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return (self.pts.min(0) + self.pts.max(0)) / 2

    @property
    def width(self) -> float:
        return float(np.ptp(self.pts[:, 0]))

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.pts[RIGHT_EYE_OUTER] - self.pts[LEFT_EYE_OUTER]))


@dataclass(frozen=True)
class Match:
    """A found face and the detection matched to it: ``landmarks68`` (68, 2), ``mesh`` (468, 3)."""

    gt: GtFace
    landmarks68: np.ndarray
    mesh: np.ndarray


def photo_id(stem: str) -> str:
    """AFW file stem -> unique-photo id (the ``_N`` copy suffix stripped)."""
    return re.sub(r"_\d+$", "", stem)


def read_pts(path: Path) -> np.ndarray:
    """A 300-W .pts file -> (68, 2) points in the pixel-centre-at-+0.5 frame."""
    body = path.read_text().split("{")[1].split("}")[0]
    pts = np.array(body.split(), dtype=np.float64).reshape(-1, 2)
    if pts.shape != (68, 2):
        raise ValueError(f"{path}: expected 68 points, found {len(pts)}")
    return pts - 0.5


def load_gt(afw: Path) -> list[GtFace]:
    """All annotated faces of the AFW folder, sorted by file name."""
    faces = []
    for pts in sorted(afw.glob("*.pts")):
        faces.append(GtFace(pts.stem + ".jpg", photo_id(pts.stem), read_pts(pts)))
    return faces


def load_records(results: Path) -> dict[str, dict]:
    """``keyfer landmarks --json`` output -> {file stem: record}."""
    data = json.loads(results.read_text())
    if data.get("schema_version") != 1:
        raise ValueError(f"{results}: unsupported schema_version {data.get('schema_version')}")
    return {Path(r["path"]).stem: r for r in data["records"]}


def box_matches(box: list[float], gt: GtFace) -> bool:
    """Whether a detected box contains the gt centre and has a plausible width."""
    x0, y0, x1, y1 = box
    cx, cy = gt.centre
    ratio = (x1 - x0) / gt.width
    return x0 <= cx <= x1 and y0 <= cy <= y1 and WIDTH_RATIO[0] <= ratio <= WIDTH_RATIO[1]


def match_face(record: dict, gt: GtFace) -> Match | None:
    """The valid detection whose box centre is closest to the gt centre, or None."""
    candidates = [f for f in record["faces"] if box_matches(f["box"], gt)]
    if not candidates:
        return None

    def distance(face: dict) -> float:
        x0, y0, x1, y1 = face["box"]
        return float(np.hypot((x0 + x1) / 2 - gt.centre[0], (y0 + y1) / 2 - gt.centre[1]))

    best = min(candidates, key=distance)
    return Match(gt, np.asarray(best["landmarks68"], float), np.asarray(best["mesh"], float))


def point_errors(points: np.ndarray, gt: GtFace) -> np.ndarray:
    """(..., 68, 2) predicted points -> (..., 68) errors normalised by the gt IOD."""
    return np.linalg.norm(points - gt.pts, axis=-1) / gt.iod


def false_positives(records: dict[str, dict], gts: list[GtFace]) -> tuple[list[int], int]:
    """FP count of each unique photo (its first file's record) and the detections counted."""
    by_photo: dict[str, list[GtFace]] = defaultdict(list)
    for gt in gts:
        by_photo[gt.photo].append(gt)
    fps, detections = [], 0
    for photo in sorted(by_photo):
        faces = by_photo[photo]
        record = records[Path(min(g.name for g in faces)).stem]
        detections += len(record["faces"])
        fps.append(sum(not any(box_matches(f["box"], g) for g in faces) for f in record["faces"]))
    return fps, detections


def duplicates_differ(records: dict[str, dict], gts: list[GtFace]) -> list[str]:
    """Photos whose byte-identical copies got different detections (should be none)."""
    by_photo: dict[str, list[str]] = defaultdict(list)
    for gt in gts:
        by_photo[gt.photo].append(Path(gt.name).stem)
    return sorted(
        photo
        for photo, stems in by_photo.items()
        if any(records[s]["faces"] != records[stems[0]]["faces"] for s in stems)
    )


def summarise(nme: np.ndarray) -> dict[str, float]:
    """(F,) per-face NMEs -> mean, median and the fraction below 0.1."""
    return {
        "mean": float(nme.mean()),
        "median": float(np.median(nme)),
        "fraction_below_0.1": float((nme < 0.1).mean()),
        "max": float(nme.max()),
    }


def evaluate(records: dict[str, dict], gts: list[GtFace]) -> tuple[dict, list[Match]]:
    """The recall, false-positive and NME68 metrics of one run, and its matches."""
    missing = [g.name for g in gts if Path(g.name).stem not in records]
    if missing:
        raise ValueError(f"{len(missing)} AFW images have no record, e.g. {missing[:3]}")
    errors = sorted(g.name for g in gts if records[Path(g.name).stem].get("error"))
    matches = [m for g in gts if (m := match_face(records[Path(g.name).stem], g))]
    fps, detections = false_positives(records, gts)
    err = np.stack([point_errors(m.landmarks68, m.gt) for m in matches])  # (F, 68)
    metrics = {
        "n_annotated_faces": len(gts),
        "found": len(matches),
        "recall": len(matches) / len(gts),
        "unique_photos": len(fps),
        "detections_on_unique_photos": detections,
        "false_positives_total": int(sum(fps)),
        "fp_per_photo": float(np.mean(fps)),
        "images_with_errors": errors,
        "duplicate_photos_with_differing_outputs": duplicates_differ(records, gts),
        "nme68": {"count": len(matches), **summarise(err.mean(1))},
        "nme_inner51": summarise(err[:, INNER].mean(1)),
        "nme_jaw17": summarise(err[:, JAW].mean(1)),
        "per_point_mean_error": [round(float(e), 5) for e in err.mean(0)],
        "per_face_nme68": {
            m.gt.name: round(float(e), 5) for m, e in zip(matches, err.mean(1), strict=True)
        },
    }
    return metrics, matches


def vertex_errors(matches: list[Match]) -> np.ndarray:
    """(F, 68, 468) error of every mesh vertex taken as every iBUG point, divided by the IOD."""
    return np.stack(
        [
            np.linalg.norm(m.mesh[None, :, :2] - m.gt.pts[:, None, :], axis=-1) / m.gt.iod
            for m in matches
        ]
    )


def mean_mesh(matches: list[Match], iterations: int = 5) -> np.ndarray:
    """(468, 3) generalised-Procrustes mean of the matched meshes (similarity-aligned, unit RMS)."""
    meshes = [m.mesh - m.mesh.mean(0) for m in matches]
    meshes = [x / np.sqrt((x**2).sum(1).mean()) for x in meshes]
    ref = meshes[0]
    for _ in range(iterations):
        aligned = []
        for x in meshes:
            u, _, vt = np.linalg.svd(x.T @ ref)
            d = np.sign(np.linalg.det(u @ vt))
            aligned.append(x @ (u @ np.diag([1, 1, d]) @ vt))
        ref = np.mean(aligned, 0)
        ref /= np.sqrt((ref**2).sum(1).mean())
    return ref


def photo_folds(matches: list[Match]) -> np.ndarray:
    """(F,) fold 0 or 1 of each face: unique photos alternate in sorted order."""
    photos = sorted({m.gt.photo for m in matches})
    fold = {p: i % 2 for i, p in enumerate(photos)}
    return np.array([fold[m.gt.photo] for m in matches])


def mapping_study(matches: list[Match], variant: str) -> str:
    """The nasal-base check and the 2-fold cross-validated mesh -> iBUG-68 fit, as Markdown."""
    err = vertex_errors(matches)  # (F, 68, 468)
    common = np.array(MESH_TO_IBUG68)
    folds = photo_folds(matches)
    fitted = {k: err[folds == k].mean(0).argmin(1) for k in (0, 1)}  # (68,) per fold
    cv_fit = np.empty(err.shape[:2])
    for k in (0, 1):
        test = folds == k
        cv_fit[test] = err[test][:, np.arange(68), fitted[1 - k]]
    cv_common = err[:, np.arange(68), common]
    full_fit = err.mean(0).argmin(1)
    return _study_markdown(
        variant, matches, err, common, folds, fitted, full_fit, cv_common, cv_fit
    )


def _nme_row(name: str, per_point: np.ndarray) -> str:
    cells = [per_point.mean(1), per_point[:, INNER].mean(1), per_point[:, JAW].mean(1)]
    means = " | ".join(f"{c.mean():.4f}" for c in cells)
    medians = " | ".join(f"{np.median(c):.4f}" for c in cells)
    return f"| {name} | {means} | {medians} |"


def _study_markdown(
    variant, matches, err, common, folds, fitted, full_fit, cv_common, cv_fit
) -> str:
    nb = NASAL_BASE
    ref = mean_mesh(matches)
    base = common[nb]
    neighbours = np.argsort(np.linalg.norm(ref - ref[base], axis=1))[: N_NASAL_NEIGHBOURS + 1]
    nb_err = err[:, nb, :]
    best_all = int(nb_err.mean(0).argmin())
    lines = [
        f"## Run `{variant}`",
        "",
        f"Made by `scripts/eval_afw.py RESULTS.json --variant {variant} --mapping-study OUT` "
        f"over the {len(matches)} AFW faces found "
        f"({len({m.gt.photo for m in matches})} unique photos). Errors are point errors "
        "divided by the gt distance between iBUG points 37 and 46 (1-based); gt is the "
        ".pts coordinates minus 0.5.",
        "",
        "### Nasal base (iBUG 34, the subnasale)",
        "",
        f"Mesh vertex {base} and its {N_NASAL_NEIGHBOURS} nearest vertices in the "
        "Procrustes-mean mesh (3D, unit RMS size), ordered by that distance:",
        "",
        "| vertex | distance in mean mesh | mean error | median error | "
        "fold 0 mean | fold 1 mean |",
        "|---|---|---|---|---|---|",
    ]
    for v in neighbours:
        e = nb_err[:, v]
        lines.append(
            f"| {v}{' (current)' if v == base else ''} | "
            f"{np.linalg.norm(ref[v] - ref[base]):.4f} | {e.mean():.4f} | {np.median(e):.4f} | "
            f"{e[folds == 0].mean():.4f} | {e[folds == 1].mean():.4f} |"
        )
    best_near = int(neighbours[nb_err[:, neighbours].mean(0).argmin()])
    lines += [
        "",
        f"Best among these: vertex {best_near} (mean {nb_err[:, best_near].mean():.4f}); "
        f"best over all 468 vertices: vertex {best_all} (mean {nb_err[:, best_all].mean():.4f}); "
        f"fold fits: {int(fitted[0][nb])} and {int(fitted[1][nb])}.",
        "",
        "### 2-fold cross-validated fit, by photo",
        "",
        "Unique photos alternate between the folds in sorted order "
        f"({int((folds == 0).sum())} / {int((folds == 1).sum())} faces). For every iBUG point the "
        "fit picks the single vertex with the lowest mean error on one fold, and the other fold "
        "scores it. The common mapping is not fitted, so its numbers are plain AFW means.",
        "",
        "| mapping | NME68 mean | inner 51 mean | jaw 17 mean | "
        "NME68 median | inner 51 median | jaw 17 median |",
        "|---|---|---|---|---|---|---|",
        _nme_row("(a) common (`MESH_TO_IBUG68`)", cv_common),
        _nme_row("(b) fitted, cross-validated", cv_fit),
        "",
        "### Points whose vertex changes",
        "",
        "The fit on all faces, and on each fold; errors are means over all faces (in-sample).",
        "",
        "| iBUG (1-based) | common vertex | error | fitted vertex | error | fold 0 fit | "
        "fold 1 fit |",
        "|---|---|---|---|---|---|---|",
    ]
    mean_err = err.mean(0)
    for i in np.flatnonzero(full_fit != common):
        lines.append(
            f"| {i + 1} | {common[i]} | {mean_err[i, common[i]]:.4f} | {full_fit[i]} | "
            f"{mean_err[i, full_fit[i]]:.4f} | {fitted[0][i]} | {fitted[1][i]} |"
        )
    tuple_rows = [
        ", ".join(str(int(v)) for v in full_fit[a:b])
        for a, b in ((0, 17), (17, 27), (27, 36), (36, 48), (48, 60), (60, 68))
    ]
    lines += [
        "",
        "### The fitted mapping (all faces)",
        "",
        "```python",
        "MESH_TO_IBUG68_AFW_FIT = (",
        *[f"    {row}," for row in tuple_rows],
        ")",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_variant(out: Path, variant: str, command: str, results: Path, metrics: dict) -> dict:
    """Add or replace one variant in the results JSON; returns the whole file's content."""
    data = json.loads(out.read_text()) if out.exists() else {"variants": {}}
    data["variants"][variant] = {"command": command, "results_file": str(results), **metrics}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return data


def markdown_report(data: dict) -> str:
    """All variants of a results JSON as Markdown: the table and each variant's worst points."""
    lines = [
        "# keyfer landmarks on AFW",
        "",
        "Made by `scripts/eval_afw.py` from `keyfer landmarks /work/shared/data/afw --json ...` "
        "(all 337 files; each .pts file is scored against its own record). Full numbers, the "
        "per-point mean errors and each face's NME are in `afw_landmarks.json`.",
        "",
        "- A face is found when a detected box contains the midpoint of its 68 gt points' "
        "bounding box and the box is 0.5 to 2.5 times as wide as the gt points.",
        "- FP / photo: detections matching no annotated face, averaged over the 185 unique "
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, help="a `keyfer landmarks --json` output over AFW")
    p.add_argument("--afw", type=Path, default=Path("/work/shared/data/afw"))
    p.add_argument("--out", type=Path, help="results JSON to add this run to")
    p.add_argument("--variant", default="default", help="the run's name in --out")
    p.add_argument("--command", default="", help="the exact keyfer command, kept in --out")
    p.add_argument("--markdown", type=Path, help="write the table of all --out variants here")
    p.add_argument("--mapping-study", type=Path, help="write the mapping study (Markdown) here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if not args.afw.is_dir() or not any(args.afw.glob("*.pts")):
        sys.exit(f"error: no AFW ground truth (*.pts) in {args.afw}; pass --afw DIR")
    if not args.results.is_file():
        sys.exit(f"error: results file {args.results} not found")
    gts = load_gt(args.afw)
    if len(gts) != N_AFW_FACES:
        log.warning("expected %d annotated faces, found %d", N_AFW_FACES, len(gts))
    metrics, matches = evaluate(load_records(args.results), gts)
    log.info(
        "found %d / %d (%.1f%%), FP/photo %.3f, NME68 mean %.4f median %.4f, inner %.4f, jaw %.4f",
        metrics["found"], metrics["n_annotated_faces"], 100 * metrics["recall"],
        metrics["fp_per_photo"], metrics["nme68"]["mean"], metrics["nme68"]["median"],
        metrics["nme_inner51"]["mean"], metrics["nme_jaw17"]["mean"],
    )  # fmt: skip
    if args.out:
        data = write_variant(args.out, args.variant, args.command, args.results, metrics)
        if args.markdown:
            args.markdown.write_text(markdown_report(data))
    if args.mapping_study:
        args.mapping_study.write_text(mapping_study(matches, args.variant))
        log.info("mapping study written to %s", args.mapping_study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
