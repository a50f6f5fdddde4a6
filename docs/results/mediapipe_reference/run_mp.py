"""Run MediaPipe's own legacy face pipelines (face_mesh + face_detection) on AFW
and on examples/astronaut.png, writing reference JSON files.

Usage: venv/bin/python run_mp.py [--afw DIR] [--astronaut PNG] [--out DIR]
Coordinates: x = norm_x * W, y = norm_y * H, z = norm_z * W (MediaPipe's native
continuous convention, no 0.5 shift).
"""
import argparse, glob, json, os
import cv2
import mediapipe as mp

HERE = os.path.dirname(os.path.abspath(__file__))

MESH_SETTINGS = dict(static_image_mode=True, max_num_faces=20,
                     refine_landmarks=False, min_detection_confidence=0.5)
DET_SETTINGS = dict(model_selection=0, min_detection_confidence=0.5)


def r3(v):
    return round(float(v), 3)


def read_rgb(path):
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)  # applies EXIF orientation
    if bgr is None:
        raise RuntimeError(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def run_mesh(fm, rgb):
    H, W = rgb.shape[:2]
    res = fm.process(rgb)
    faces = []
    for lms in res.multi_face_landmarks or []:
        faces.append({"mesh": [[r3(l.x * W), r3(l.y * H), r3(l.z * W)]
                               for l in lms.landmark]})
    return faces


def run_det(fd, rgb):
    H, W = rgb.shape[:2]
    res = fd.process(rgb)
    dets = []
    for d in res.detections or []:
        bb = d.location_data.relative_bounding_box
        dets.append({
            "box": [r3(bb.xmin * W), r3(bb.ymin * H),
                    r3((bb.xmin + bb.width) * W), r3((bb.ymin + bb.height) * H)],
            "score": round(float(d.score[0]), 5),
            "keypoints6": [[r3(k.x * W), r3(k.y * H)]
                           for k in d.location_data.relative_keypoints],
        })
    return dets


def settings(kind):
    s = dict(MESH_SETTINGS if kind == "mesh" else DET_SETTINGS)
    s.update({
        "solution": ("mediapipe.solutions.face_mesh" if kind == "mesh"
                     else "mediapipe.solutions.face_detection"),
        "image_reading": "cv2.imread(path, IMREAD_COLOR) (applies EXIF orientation) then BGR->RGB",
        "coordinates": ("x = norm_x * W, y = norm_y * H, z = norm_z * W (pixels, MediaPipe native "
                        "continuous convention, no 0.5 shift), rounded to 3 decimals"),
        "opencv_version": cv2.__version__,
    })
    if kind == "det":
        s["box_format"] = "[x0, y0, x1, y1] = [xmin*W, ymin*H, (xmin+width)*W, (ymin+height)*H]"
        s["keypoints6_order"] = ["right_eye", "left_eye", "nose_tip", "mouth_center",
                                 "right_ear_tragion", "left_ear_tragion"]
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--afw", default=os.path.join(os.environ.get("KEYFER_DATA", "."), "afw"))
    ap.add_argument("--astronaut", default=os.path.join(HERE, "../../../examples/astronaut.png"))
    ap.add_argument("--out", default=HERE)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    mesh_out = {"mediapipe_version": mp.__version__, "settings": settings("mesh"), "images": {}}
    det_out = {"mediapipe_version": mp.__version__, "settings": settings("det"), "images": {}}
    astro = {"mediapipe_version": mp.__version__,
             "settings": {"mesh": settings("mesh"), "detection": settings("det")},
             "images": {}}

    fm = mp.solutions.face_mesh.FaceMesh(**MESH_SETTINGS)
    fd = mp.solutions.face_detection.FaceDetection(**DET_SETTINGS)
    paths = sorted(glob.glob(os.path.join(a.afw, "*.jpg")))
    for i, p in enumerate(paths):
        rgb = read_rgb(p)
        H, W = rgb.shape[:2]
        name = os.path.basename(p)
        mesh_out["images"][name] = {"width": W, "height": H, "faces": run_mesh(fm, rgb)}
        det_out["images"][name] = {"width": W, "height": H, "detections": run_det(fd, rgb)}
        if i % 50 == 0:
            print(i, name, len(mesh_out["images"][name]["faces"]),
                  len(det_out["images"][name]["detections"]), flush=True)

    rgb = read_rgb(a.astronaut)
    H, W = rgb.shape[:2]
    astro["images"][os.path.basename(a.astronaut)] = {
        "width": W, "height": H, "faces": run_mesh(fm, rgb), "detections": run_det(fd, rgb)}
    fm.close(); fd.close()

    for fname, obj in [("mediapipe_facemesh_afw.json", mesh_out),
                       ("mediapipe_detection_afw.json", det_out),
                       ("mediapipe_astronaut.json", astro)]:
        with open(os.path.join(a.out, fname), "w") as f:
            json.dump(obj, f, separators=(",", ":"))
        print("wrote", os.path.join(a.out, fname))


if __name__ == "__main__":
    main()
