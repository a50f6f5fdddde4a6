"""FaceMesh presence of the whole-image fallback (:func:`keyfer.faces.pipeline.whole_image_located`)
on tight face crops and on face-free crops of photos: which presence should a whole image need
to count as a face, and from which is such a face reliable?

- Tight face crops: every FERPlus Valid image (48x48 gray) and every SFEW Train still (143x181
  colour). Each gets the whole-image presence (the whole-image path forced, whatever the
  detector finds) and whether the pipeline without the fallback finds a face (detector, then
  FaceMesh presence >= its ``min_presence``), to count the images the fallback rescues.
- Background crops: ``--backgrounds`` rectangles cut from AFW photos (one per unique photo: the
  ``X_1.jpg``, ``X_2.jpg`` copies are merged and all their annotated faces avoided). Heights are
  log-uniform in [``MIN_SIDE``, ``MAX_SIDE``] px, widths by an aspect of SFEW's 143/181, 1 or
  181/143, and no crop overlaps any face's 68-point box grown by ``FACE_GROWTH`` of its width
  and height on each side. A ``GRAY48_SHARE`` of them are made FERPlus-like: gray, resized to
  48x48. The same two measures are taken.
- AFW has faces nobody annotated. Every background crop whose presence reached
  :data:`AUDITED_FROM` was looked at (seed 0, 4,000 crops); :data:`HOLDS_A_FACE` lists those
  that show a face or a large part of one. The others are the face-free crops.

A false face at a threshold is a face-free crop whose whole-image presence reaches it (whatever
the detector says: the conservative reading). The fallback's threshold is the lowest on
:data:`GRID` with at most :data:`MAX_FALSE_FACES` false faces; a whole-image face is reliable
from the lowest with at most :data:`MAX_RELIABLE_FALSE_FACES`, but never below the presence
every face needs to be reliable (:data:`keyfer.api.RELIABLE_MIN_PRESENCE`).

Usage (``--report-only`` redraws the page, the summary and the figures from ``presence.json``)::

    python studies/2026-12-whole-image-threshold/whole_image_threshold_study.py \\
        --ferplus $KEYFER_DATA/ferplus --sfew $KEYFER_DATA/sfew --afw $KEYFER_DATA/afw
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from keyfer.api import RELIABLE_MIN_PRESENCE
from keyfer.faces.pipeline import FacePipeline, whole_image_located
from keyfer.io.images import read_image
from keyfer.landmark_eval import photo_id, read_pts

log = logging.getLogger("whole_image_threshold_study")

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs/results/whole_image_threshold"
MIN_SIDE, MAX_SIDE = 40, 320
ASPECTS = (143 / 181, 1.0, 181 / 143)
FACE_GROWTH = 0.5
GRAY48_SHARE = 0.25
TRIES = 200
GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))
TABLE = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
MAX_FALSE_FACES = 0.01
MAX_RELIABLE_FALSE_FACES = 0.001
AUDITED_FROM = 0.05
AUDITED_RUN = (0, 4000)  # seed, background crops
HOLDS_A_FACE = {
    2938: "a face, forehead to nose",
    123: "a face in profile",
    431: "a face (gray)",
    3754: "the lower half of a face, and part of another",
    3761: "a face",
    1991: "half a face in profile",
    1483: "a face",
    2691: "part of a face in profile (eye, ear)",
    1552: "a face (gray)",
    3742: "a face (gray)",
    3757: "the upper half of a face",
    2913: "four faces",
    1793: "a face in profile",
    3344: "the upper half of a face, with glasses",
    972: "a mouth and chin",
    1902: "a face",
    3937: "a painted face (a sculpture)",
    434: "a face",
    790: "a face",
    2064: "a face in profile",
}
"""Background crops (index in ``presence.json``, seed 0) that show a face or a large part of one,
found by looking at every crop whose presence reached :data:`AUDITED_FROM`."""
TILE = 128
FIGURE_COLUMNS = 8
JPEG_QUALITY = 85


def measure(pipeline: FacePipeline, images: list[np.ndarray], batch: int) -> list[dict]:
    """Per image: ``presence`` of the whole image taken as one face, and ``detected``: whether
    the pipeline without the fallback finds a face in it."""
    rows = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        found = pipeline.batch(chunk, batch)
        crops = torch.cat([whole_image_located(image).crops for image in chunk])
        with torch.inference_mode():
            presence = pipeline.facemesh(crops.to(pipeline.device)).presence.float().cpu()
        rows += [
            {"presence": round(float(p), 5), "detected": len(f) > 0}
            for p, f in zip(presence, found, strict=True)
        ]
        log.info("%d / %d", min(start + batch, len(images)), len(images))
    return rows


def tight_crops(ferplus: Path, sfew: Path) -> dict[str, list[Path]]:
    """The tight face crops: FERPlus Valid and SFEW Train, sorted by path."""
    return {
        "ferplus_valid": sorted((ferplus / "data/FER2013Valid").glob("*.png")),
        "sfew_train": sorted(sfew.glob("Train/*/*.png")),
    }


def photo_faces(afw: Path) -> dict[str, tuple[Path, list[np.ndarray]]]:
    """{photo id: (its first image file, the (68, 2) points of all its annotated faces)}."""
    photos: dict[str, tuple[Path, list[np.ndarray]]] = {}
    for pts in sorted(afw.glob("*.pts")):
        photos.setdefault(photo_id(pts.stem), (pts.with_suffix(".jpg"), []))[1].append(
            read_pts(pts)
        )
    return photos


def forbidden_boxes(faces: list[np.ndarray]) -> np.ndarray:
    """(F, 4) x0, y0, x1, y1: each face's 68-point box grown by :data:`FACE_GROWTH` per side."""
    boxes = []
    for points in faces:
        low, high = points.min(0), points.max(0)
        grow = (high - low) * FACE_GROWTH
        boxes.append([*(low - grow), *(high + grow)])
    return np.array(boxes)


def sample_rectangles(
    rng: np.random.Generator, width: int, height: int, avoid: np.ndarray, count: int
) -> list[list[int]]:
    """Up to ``count`` rectangles [x0, y0, x1, y1] (integer pixel edges) inside a ``width`` x
    ``height`` image, each overlapping none of the ``avoid`` (F, 4) boxes."""
    found: list[list[int]] = []
    for _ in range(TRIES * count):
        if len(found) == count:
            break
        h = round(float(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE)))))
        w = round(h * ASPECTS[rng.integers(len(ASPECTS))])
        if w > width or h > height:
            continue
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        x1, y1 = x0 + w, y0 + h
        if np.any(
            (x0 < avoid[:, 2]) & (avoid[:, 0] < x1) & (y0 < avoid[:, 3]) & (avoid[:, 1] < y1)
        ):
            continue
        found.append([x0, y0, x1, y1])
    return found


def background_specs(afw: Path, total: int, seed: int) -> list[dict]:
    """``total`` (or fewer, where photos have no room) face-free crops spread evenly over the
    unique AFW photos: source file, rectangle and kind (``colour`` or ``gray48``)."""
    rng = np.random.default_rng(seed)
    photos = photo_faces(afw)
    per_photo = -(-total // len(photos))
    specs = []
    for path, faces in photos.values():
        height, width = read_image(path).shape[:2]
        for rect in sample_rectangles(rng, width, height, forbidden_boxes(faces), per_photo):
            kind = "gray48" if rng.uniform() < GRAY48_SHARE else "colour"
            specs.append({"path": path.name, "rect": rect, "kind": kind})
    return specs[:total]


def background_image(afw: Path, spec: dict, cache: dict[str, np.ndarray]) -> np.ndarray:
    """The (H, W, 3) uint8 RGB crop a spec describes (gray48: gray, resized to 48x48)."""
    if spec["path"] not in cache:
        cache.clear()
        cache[spec["path"]] = read_image(afw / spec["path"])
    x0, y0, x1, y1 = spec["rect"]
    crop = np.ascontiguousarray(cache[spec["path"]][y0:y1, x0:x1])
    if spec["kind"] == "gray48":
        gray = cv2.cvtColor(
            cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
        )
        crop = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    return crop


def rates(rows: list[dict], threshold: float) -> dict[str, float]:
    """Shares of ``rows`` whose whole-image presence reaches ``threshold`` (``whole``), and
    that a pipeline with the fallback at that threshold finds a face in (``found``)."""
    presence = np.array([r["presence"] for r in rows])
    detected = np.array([r["detected"] for r in rows])
    whole = presence >= threshold
    return {"whole": float(whole.mean()), "found": float((detected | whole).mean())}


def lowest(rows: list[dict], max_rate: float) -> float:
    """The lowest threshold of :data:`GRID` that at most ``max_rate`` of ``rows`` reach."""
    for threshold in GRID:
        if rates(rows, threshold)["whole"] <= max_rate:
            return threshold
    raise SystemExit(f"no threshold on the grid has at most {max_rate:.2%} false faces")


def face_free(backgrounds: list[dict]) -> list[dict]:
    """The background crops that hold no face (:data:`HOLDS_A_FACE` left out)."""
    return [b for i, b in enumerate(backgrounds) if i not in HOLDS_A_FACE]


def summarise(result: dict) -> dict:
    """The choices, and the rates of the tight and face-free crops per threshold."""
    tight, backgrounds = result["tight"], result["backgrounds"]
    if (result["seed"], len(backgrounds)) != AUDITED_RUN:
        log.warning("HOLDS_A_FACE was found for --seed 0 --backgrounds 4000 only: audit again")
    free = face_free(backgrounds)
    threshold = lowest(free, MAX_FALSE_FACES)
    reliable_measured = lowest(free, MAX_RELIABLE_FALSE_FACES)
    reliable = max(reliable_measured, RELIABLE_MIN_PRESENCE)
    table = []
    for t in sorted({*TABLE, threshold, reliable_measured, reliable}):
        row = {
            "threshold": t,
            "false_faces": sum(b["presence"] >= t for b in free),
            "all_backgrounds": sum(b["presence"] >= t for b in backgrounds),
        }
        for name, rows in tight.items():
            row[f"{name}_kept"] = rates(rows, t)["whole"]
            row[f"{name}_found"] = rates(rows, t)["found"]
        table.append(row)
    missed = {name: [r for r in rows if not r["detected"]] for name, rows in tight.items()}
    return {
        "threshold": threshold,
        "reliable_measured": reliable_measured,
        "reliable": reliable,
        "face_free": len(free),
        "table": table,
        "detected": {
            name: float(np.mean([r["detected"] for r in rows]))
            for name, rows in {**tight, "face_free": free}.items()
        },
        "missed_by_detector": {name: len(rows) for name, rows in missed.items()},
        "rescued_by_fallback": {
            name: sum(r["presence"] >= threshold for r in rows) for name, rows in missed.items()
        },
        "rescued_reliable": {
            name: sum(r["presence"] >= reliable for r in rows) for name, rows in missed.items()
        },
        "false_faces_by_kind": {
            kind: [
                sum(b["presence"] >= threshold for b in free if b["kind"] == kind),
                sum(b["kind"] == kind for b in free),
            ]
            for kind in ("colour", "gray48")
        },
        "fallback_false_faces": sum(not b["detected"] and b["presence"] >= threshold for b in free),
    }


def tile(image: np.ndarray, label: str) -> np.ndarray:
    """A :data:`TILE`-square thumbnail of an RGB image, letterboxed, with ``label`` under it."""
    height, width = image.shape[:2]
    scale = TILE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    canvas = np.full((TILE + 18, TILE, 3), 255, np.uint8)
    top, left = (TILE - size[1]) // 2, (TILE - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = small
    cv2.putText(canvas, label, (3, TILE + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)  # fmt: skip
    return canvas


def grid(tiles: list[np.ndarray]) -> np.ndarray:
    """Tiles in rows of :data:`FIGURE_COLUMNS`, blank-padded."""
    tiles = tiles + [np.full_like(tiles[0], 255)] * (-len(tiles) % FIGURE_COLUMNS)
    rows = [
        np.concatenate(tiles[i : i + FIGURE_COLUMNS], axis=1)
        for i in range(0, len(tiles), FIGURE_COLUMNS)
    ]
    return np.concatenate(rows, axis=0)


def save_figure(path: Path, image: np.ndarray) -> None:
    """Write an RGB figure as a JPEG (quality :data:`JPEG_QUALITY`)."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def figures(result: dict, afw: Path, tight_paths: dict[str, list[Path]], out: Path) -> None:
    """``top_backgrounds.jpg``: the 32 background crops with the highest presence (``F``: it
    holds a face); ``lost_tight.jpg``: tight crops that neither the detector nor the fallback at
    the chosen threshold finds, lowest presence first (16 of each set at most)."""
    backgrounds = result["backgrounds"]
    order = sorted(range(len(backgrounds)), key=lambda i: -backgrounds[i]["presence"])[:32]
    cache: dict[str, np.ndarray] = {}
    shown = []
    for i in order:
        face = " F" if i in HOLDS_A_FACE else ""
        label = f"#{i} p={backgrounds[i]['presence']:.3f}{face}"
        shown.append(tile(background_image(afw, backgrounds[i], cache), label))
    save_figure(out / "top_backgrounds.jpg", grid(shown))
    threshold = result["summary"]["threshold"]
    lost = []
    for name, rows in result["tight"].items():
        missed = [i for i, r in enumerate(rows) if not r["detected"] and r["presence"] < threshold]
        for i in sorted(missed, key=lambda i: rows[i]["presence"])[:16]:
            lost.append(tile(read_image(tight_paths[name][i]), f"p={rows[i]['presence']:.3f}"))
    if lost:
        save_figure(out / "lost_tight.jpg", grid(lost))


def portable(command: str) -> str:
    """``command`` with the ``$KEYFER_DATA`` folder written as the variable."""
    root = os.environ.get("KEYFER_DATA")
    return command.replace(root.rstrip("/"), "$KEYFER_DATA") if root else command


FINDINGS = """\
**What the background crops with a high presence are.** Of the {audited} crops whose presence
reached {audited_from}, {faces} show a face that AFW does not annotate, or a large part of one
(`HOLDS_A_FACE` in the study lists them: profiles, half faces, gray 48x48 faces, a group of
faces, a painted sculpture); the detector finds a face in {faces_detected} of them. They are left
out of the false faces. The face-free crops with the highest presence are a printed box with a
red star (0.955), an arm against hair (0.805) and a woven textile (0.777); then hair, skin and
cloth. The tight crops the pipeline still loses (second figure) are, in FERPlus, faces lying on
their side (the whole-image crop is upright), profiles and close-ups that show part of a face;
in SFEW, stills too dark or blurred to show a face, close-ups of part of one, and a few without
a face (a window, hands)."""


def markdown(result: dict) -> str:
    """The report page from a result."""
    s = result["summary"]
    counts = {name: len(rows) for name, rows in result["tight"].items()}
    backgrounds = result["backgrounds"]
    kinds = {k: sum(b["kind"] == k for b in backgrounds) for k in ("colour", "gray48")}
    free = s["face_free"]
    lines = [
        "# Whole-image fallback: the presence threshold",
        "",
        "When the detector finds no face in an image, keyfer takes the whole image as one face",
        "crop (`keyfer.faces.pipeline.whole_image_located`: the image centred in a square of its",
        "longer side plus a 0.2 margin each side, upright) and keeps it if FaceMesh's presence",
        "reaches `WHOLE_IMAGE_MIN_PRESENCE`. This page chooses that threshold, and the presence",
        "from which such a face is `reliable`.",
        "",
        "Measured on the whole-image crop of every image, whatever the detector finds:",
        "",
        f"- tight face crops: all {counts['ferplus_valid']:,} FERPlus Valid images (48x48 gray)"
        f" and all {counts['sfew_train']} SFEW Train stills (143x181 colour);",
        f"- {len(backgrounds):,} background crops of the {result['unique_photos']} unique AFW"
        f" photos (seed {result['seed']}): heights log-uniform in {MIN_SIDE}-{MAX_SIDE} px,"
        " aspect 143/181, 1 or 181/143, none overlapping any annotated face's 68-point box"
        f" grown by {FACE_GROWTH:.0%} of its size on each side; {kinds['gray48']:,} of them made"
        f" FERPlus-like (gray, 48x48), {kinds['colour']:,} kept in colour at their size. After"
        f" the audit below, {free:,} of them are face-free.",
        "",
        "`false faces`: face-free crops whose whole-image presence reaches the threshold (counted",
        "whether or not the detector finds something in them: the conservative reading), out of",
        f"{free:,}; `all crops`: the same count before the audit, out of {len(backgrounds):,}.",
        "`kept`: share of the tight crops whose whole-image presence reaches the threshold;",
        "`found`: share in which the pipeline finds a face, by the detector or else by the",
        "fallback at that threshold.",
        "",
        "| threshold | false faces | all crops | FERPlus kept | SFEW kept | FERPlus found"
        " | SFEW found |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in s["table"]:
        notes = [
            name
            for name, value in (("chosen", s["threshold"]), ("reliable", s["reliable"]))
            if row["threshold"] == value
        ]
        mark = f" ({', '.join(notes)})" if notes else ""
        lines.append(
            f"| {row['threshold']:.2f}{mark} | {row['false_faces']}"
            f" ({row['false_faces'] / free:.2%}) | {row['all_backgrounds']}"
            f" | {row['ferplus_valid_kept']:.1%} | {row['sfew_train_kept']:.1%}"
            f" | {row['ferplus_valid_found']:.1%} | {row['sfew_train_found']:.1%} |"
        )
    det, missed = s["detected"], s["missed_by_detector"]
    rescued, rescued_reliable = s["rescued_by_fallback"], s["rescued_reliable"]
    by_kind = s["false_faces_by_kind"]
    audited = [i for i, b in enumerate(backgrounds) if b["presence"] >= AUDITED_FROM]
    at = {row["threshold"]: row for row in s["table"]}
    chosen = at[s["threshold"]]
    lines += [
        "",
        "Without the fallback, the pipeline finds a face in "
        f"{det['ferplus_valid']:.1%} of FERPlus Valid ({missed['ferplus_valid']} missed) and"
        f" {det['sfew_train']:.1%} of SFEW Train ({missed['sfew_train']} missed), and in"
        f" {det['face_free']:.2%} of the face-free crops.",
        "",
        f"**Choice.** Rule: the lowest threshold on a 0.05 grid from {GRID[0]:.2f} to"
        f" {GRID[-1]:.2f} with at most {MAX_FALSE_FACES:.0%} false faces:"
        f" **{s['threshold']:.2f}** (`WHOLE_IMAGE_MIN_PRESENCE`, provisionally 0.5 before). It"
        f" keeps {chosen['ferplus_valid_kept']:.1%} of FERPlus Valid and"
        f" {chosen['sfew_train_kept']:.1%} of SFEW Train as whole images; the fallback rescues"
        f" {rescued['ferplus_valid']} of the {missed['ferplus_valid']} FERPlus images and"
        f" {rescued['sfew_train']} of the {missed['sfew_train']} SFEW images the detector"
        f" misses. False faces at it: {by_kind['colour'][0]} of {by_kind['colour'][1]:,} colour"
        f" crops, {by_kind['gray48'][0]} of {by_kind['gray48'][1]:,} gray 48x48 ones; counting"
        " only the crops where the detector finds nothing (where the fallback runs), it adds"
        f" {s['fallback_false_faces']} false faces in {free:,}.",
        "",
        "**Reliable.** The lowest threshold with at most"
        f" {MAX_RELIABLE_FALSE_FACES:.1%} false faces is {s['reliable_measured']:.2f}, below the"
        f" presence every face already needs to be `reliable` ({RELIABLE_MIN_PRESENCE}), so a"
        f" whole-image face is reliable from **{s['reliable']:.2f}**, like any face (the size and"
        " yaw rules apply too; a whole-image face's box is the image). At"
        f" {s['reliable']:.2f} the face-free crops give"
        f" {at[s['reliable']]['false_faces']}"
        f" false faces in {free:,}; {rescued_reliable['ferplus_valid']} of the"
        f" {rescued['ferplus_valid']} rescued FERPlus images and"
        f" {rescued_reliable['sfew_train']} of the {rescued['sfew_train']} rescued SFEW images"
        " reach it.",
        "",
        FINDINGS.format(
            audited=len(audited),
            audited_from=AUDITED_FROM,
            faces=len(HOLDS_A_FACE),
            faces_detected=sum(backgrounds[i]["detected"] for i in HOLDS_A_FACE),
        ),
        "",
        "Limits: 4,000 crops resolve rates of about 0.1% only roughly (a few crops); the",
        "backgrounds are crops of people photos at face scale, not every kind of image a user may",
        "bring.",
        "",
        "Figures: the background crops with the highest presence (`#` their index in the JSON,",
        "`F` a face found by the audit), and tight crops that neither the detector nor the",
        "fallback finds, lowest presence first.",
        "",
        "![background crops with the highest presence](whole_image_threshold/top_backgrounds.jpg)",
        "",
        "![tight crops the pipeline loses](whole_image_threshold/lost_tight.jpg)",
        "",
        "Raw per-image presence and detection: `whole_image_threshold/presence.json`; the numbers",
        "of this page: `whole_image_threshold/summary.json`.",
        "",
        "Command (about 10 minutes on 1 CPU thread; `--report-only` redraws this page, the",
        "summary and the figures from the JSON):",
        "",
        "```",
        result["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, required=True, help="the FERPlus root")
    parser.add_argument("--sfew", type=Path, required=True, help="the SFEW root")
    parser.add_argument("--afw", type=Path, required=True, help="the AFW folder")
    parser.add_argument("--backgrounds", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--markdown", type=Path, default=OUT.with_suffix(".md"))
    parser.add_argument("--report-only", action="store_true", help="redraw from the JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    raw = args.out / "presence.json"
    tight_paths = tight_crops(args.ferplus, args.sfew)

    if args.report_only:
        result = json.loads(raw.read_text())
    else:
        pipeline = FacePipeline(fallback=False)
        tight = {
            name: measure(pipeline, [read_image(p) for p in paths], args.batch)
            for name, paths in tight_paths.items()
        }
        for name, rows in tight.items():
            for row, path in zip(rows, tight_paths[name], strict=True):
                row["path"] = str(
                    path.relative_to(args.sfew if name == "sfew_train" else args.ferplus)
                )
        specs = background_specs(args.afw, args.backgrounds, args.seed)
        cache: dict[str, np.ndarray] = {}
        backgrounds = measure(
            pipeline, [background_image(args.afw, s, cache) for s in specs], args.batch
        )
        command = portable(shlex.join(
            ["python", "studies/2026-12-whole-image-threshold/whole_image_threshold_study.py",
             *sys.argv[1:]]
        ))  # fmt: skip
        result = {
            "command": command,
            "seed": args.seed,
            "unique_photos": len(photo_faces(args.afw)),
            "tight": tight,
            "backgrounds": [{**s, **r} for s, r in zip(specs, backgrounds, strict=True)],
        }
        args.out.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(result) + "\n")
    result["summary"] = summarise(result)
    (args.out / "summary.json").write_text(json.dumps(result["summary"], indent=1) + "\n")
    figures(result, args.afw, tight_paths, args.out)
    args.markdown.write_text(markdown(result))
    log.info("%s", json.dumps({k: v for k, v in result["summary"].items() if k != "table"}))
    log.info("wrote %s and the files under %s", args.markdown, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
