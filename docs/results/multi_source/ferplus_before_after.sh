#!/bin/bash
# keyfer train ferplus for 2 epochs with the code before the multi-source change (a snapshot of
# src/keyfer) and after it, on the existing FERPlus Keypoint-Feature caches; compares the head
# weights and the logged losses.
# Run from the repository root with KEYFER_DATA set (the FERPlus caches under .cache/kf exist).
set -e
source .venv/bin/activate
W=runs/bitcheck
for code in old new; do
  if [ $code = old ]; then PP=/path/to/snapshot-before; else PP=; fi
  rm -rf $W/ferplus-$code
  /usr/bin/time -f "$code: %e s wall, %M KB max RSS" env PYTHONPATH=$PP keyfer train ferplus --set train.epochs=2 --out $W/ferplus-$code 2>&1 | grep -v "^keyfer" | tail -3
done
python - <<'PY'
import re, torch
runs = ["runs/bitcheck/ferplus-old", "runs/bitcheck/ferplus-new"]
a, b = (torch.load(f"{d}/checkpoint.pt", weights_only=True) for d in runs)
print("head tensors identical:", all(torch.equal(a["head"][k], b["head"][k]) for k in a["head"]))
for d in runs:
    log = open(f"{d}/train.log").read()
    print(d, "losses", re.findall(r"loss ([\d.]+)", log), "built caches:", "building" in log)
PY
