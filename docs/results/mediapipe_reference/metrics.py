"""Metrics for MediaPipe's own face pipelines on AFW (337 annotated faces).

Usage: python metrics.py [--afw DIR] [--res DIR]   (needs only numpy)
Reads mediapipe_facemesh_afw.json / mediapipe_detection_afw.json from --res and
writes mediapipe_afw_metrics.json there.

Conventions: gt (.pts, 1-based) - 0.5  vs  MediaPipe x = norm_x * W (continuous).
A face counts as found by a box when the box contains the gt centre (mean of the
68 gt points; the midpoint of their bbox is reported too as a check) and
0.5 <= box_width / gt_width <= 2.5, gt_width = max x - min x of the 68 points.
"""
import argparse, glob, json, lzma, os, re
from collections import defaultdict
import numpy as np

MESH68 = [162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
          71, 63, 105, 66, 107, 336, 296, 334, 293, 301, 168, 197, 5, 4, 75, 97, 2, 326, 305,
          33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380, 61, 39, 37, 0, 267, 269,
          291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87]
assert len(MESH68) == 68


def read_pts(path):
    lines = open(path).read().split("{")[1].split("}")[0].split()
    pts = np.array(lines, dtype=np.float64).reshape(-1, 2)
    assert pts.shape == (68, 2), path
    return pts - 0.5


def photo_id(name):
    return re.sub(r"_\d+$", "", os.path.splitext(name)[0])


def centre(pts, how):
    if how == "mean":
        return pts.mean(0)
    return (pts.min(0) + pts.max(0)) / 2


def matches(box, c, gw):
    x0, y0, x1, y1 = box
    inside = x0 <= c[0] <= x1 and y0 <= c[1] <= y1
    ratio = (x1 - x0) / gw
    return inside and 0.5 <= ratio <= 2.5


def recall_and_fp(gt, boxes_by_img, how):
    """gt: {name: pts}; boxes_by_img: {name: [box,...]}."""
    found = 0
    for name, pts in gt.items():
        c = centre(pts, how)
        gw = pts[:, 0].max() - pts[:, 0].min()
        if any(matches(b, c, gw) for b in boxes_by_img[name]):
            found += 1
    # false positives per unique photo
    photos = defaultdict(list)
    for name in gt:
        photos[photo_id(name)].append(name)
    fps, ndet = [], 0
    for pid, names in sorted(photos.items()):
        boxes = boxes_by_img[sorted(names)[0]]  # all files of a photo are identical images
        ndet += len(boxes)
        fp = 0
        for b in boxes:
            if not any(matches(b, centre(gt[n], how), gt[n][:, 0].max() - gt[n][:, 0].min())
                       for n in names):
                fp += 1
        fps.append(fp)
    return {"found": found, "total": len(gt), "recall": found / len(gt),
            "unique_photos": len(photos), "detections_on_unique_photos": ndet,
            "false_positives_total": int(sum(fps)), "fp_per_photo": float(np.mean(fps))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--afw", default=os.path.join(os.environ.get("KEYFER_DATA", "."), "afw"))
    ap.add_argument("--res", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args()
    mesh = json.load(lzma.open(os.path.join(a.res, "mediapipe_facemesh_afw.json.xz"), "rt"))
    det = json.load(open(os.path.join(a.res, "mediapipe_detection_afw.json")))

    gt = {}
    for p in sorted(glob.glob(os.path.join(a.afw, "*.pts"))):
        name = os.path.basename(p)[:-4] + ".jpg"
        gt[name] = read_pts(p)
    assert set(gt) == set(mesh["images"]) == set(det["images"])

    # sanity: duplicates of one photo gave identical outputs
    photos = defaultdict(list)
    for n in gt:
        photos[photo_id(n)].append(n)
    dup_mismatch = [pid for pid, ns in photos.items()
                    if any(det["images"][n]["detections"] != det["images"][ns[0]]["detections"]
                           or mesh["images"][n]["faces"] != mesh["images"][ns[0]]["faces"]
                           for n in ns)]

    det_boxes = {n: [d["box"] for d in v["detections"]] for n, v in det["images"].items()}
    mesh_arr = {n: [np.array(f["mesh"])[:, :2] for f in v["faces"]]
                for n, v in mesh["images"].items()}
    mesh_boxes = {n: [[m[:, 0].min(), m[:, 1].min(), m[:, 0].max(), m[:, 1].max()] for m in ms]
                  for n, ms in mesh_arr.items()}

    out = {"mediapipe_version": mesh["mediapipe_version"],
           "n_images": len(gt), "n_annotated_faces": len(gt),
           "gt_convention": "pts (1-based) - 0.5, compared with x = norm_x * W",
           "match_rule": "box contains gt centre and 0.5 <= box_w / gt_w <= 2.5",
           "duplicate_photos_with_differing_outputs": dup_mismatch}
    for how in ("mean", "bbox_mid"):
        out[f"detection_centre_{how}"] = recall_and_fp(gt, det_boxes, how)
        out[f"face_mesh_centre_{how}"] = recall_and_fp(gt, mesh_boxes, how)

    # NME68: match gt face to mesh whose bbox contains the gt centre (closest centre if several)
    nmes, nmes_strict, per_face = [], [], {}
    for name, pts in gt.items():
        c = centre(pts, "mean")
        gw = pts[:, 0].max() - pts[:, 0].min()
        cand = []
        for m, b in zip(mesh_arr[name], mesh_boxes[name]):
            if b[0] <= c[0] <= b[2] and b[1] <= c[1] <= b[3]:
                bc = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
                cand.append((np.linalg.norm(bc - c), m, b))
        if not cand:
            continue
        _, m, b = min(cand, key=lambda t: t[0])
        p68 = m[MESH68]
        iod = np.linalg.norm(pts[36] - pts[45])
        nme = float(np.linalg.norm(p68 - pts, axis=1).mean() / iod)
        nmes.append(nme)
        per_face[name] = round(nme, 5)
        if 0.5 <= (b[2] - b[0]) / gw <= 2.5:
            nmes_strict.append(nme)
    nmes = np.array(nmes)
    out["nme68"] = {
        "match_rule": "mesh 2D bbox contains gt mean centre; closest bbox centre if several",
        "normaliser": "distance gt pt37-pt46 (outer eye corners, 1-based)",
        "count": int(len(nmes)), "mean": float(nmes.mean()), "median": float(np.median(nmes)),
        "count_also_width_ratio_ok": len(nmes_strict),
        "mean_also_width_ratio_ok": float(np.mean(nmes_strict)),
        "median_also_width_ratio_ok": float(np.median(nmes_strict)),
        "fraction_below_0.1": float((nmes < 0.1).mean()),
        "max": float(nmes.max()),
        "per_face": per_face,
    }
    with open(os.path.join(a.res, "mediapipe_afw_metrics.json"), "w") as f:
        json.dump(out, f, indent=1)
    summary = {k: v for k, v in out.items() if k != "nme68"}
    summary["nme68"] = {k: v for k, v in out["nme68"].items() if k != "per_face"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
