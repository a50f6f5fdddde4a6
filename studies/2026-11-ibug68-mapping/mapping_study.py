"""The mesh -> iBUG-68 mapping measured on AFW: is mesh vertex 2 the right nasal base (iBUG 34),
and would a mapping fitted to AFW be better (2-fold cross-validated by photo)?
Results: docs/results/ibug68_mapping_study.md.

    keyfer landmarks AFW_DIR --json afw.json
    python studies/2026-11-ibug68-mapping/mapping_study.py afw.json --afw AFW_DIR \\
        --variant default --out default.md

The faces are matched to the annotations as ``keyfer eval-landmarks`` matches them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from keyfer.faces.ibug68 import MESH_TO_IBUG68, NASAL_BASE
from keyfer.landmark_eval import (
    INNER,
    JAW,
    MatchedFace,
    read_annotations,
    read_records,
    score_landmarks,
)

N_NASAL_NEIGHBOURS = 10


def vertex_errors(matches: list[MatchedFace]) -> np.ndarray:
    """(F, 68, 468) error of every mesh vertex taken as every iBUG point, divided by the IOD."""
    return np.stack(
        [
            np.linalg.norm(m.mesh[None, :, :2] - m.truth.points[:, None, :], axis=-1) / m.truth.iod
            for m in matches
        ]
    )


def mean_mesh(matches: list[MatchedFace], iterations: int = 5) -> np.ndarray:
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


def photo_folds(matches: list[MatchedFace]) -> np.ndarray:
    """(F,) fold 0 or 1 of each face: unique photos alternate in sorted order."""
    photos = sorted({m.truth.photo for m in matches})
    fold = {p: i % 2 for i, p in enumerate(photos)}
    return np.array([fold[m.truth.photo] for m in matches])


def mapping_study(matches: list[MatchedFace], variant: str) -> str:
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
        f"Made by `mapping_study.py RESULTS.json --afw AFW --variant {variant} --out OUT` "
        f"over the {len(matches)} AFW faces found "
        f"({len({m.truth.photo for m in matches})} unique photos). Errors are point errors "
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="a `keyfer landmarks --json` output over AFW")
    parser.add_argument("--afw", type=Path, required=True, help="the AFW folder")
    parser.add_argument("--variant", default="default", help="the run's name in the report")
    parser.add_argument("--out", type=Path, required=True, help="write the study (Markdown) here")
    args = parser.parse_args()
    _, matches = score_landmarks(read_records(args.records), read_annotations(args.afw))
    args.out.write_text(mapping_study(matches, args.variant))


if __name__ == "__main__":
    main()
