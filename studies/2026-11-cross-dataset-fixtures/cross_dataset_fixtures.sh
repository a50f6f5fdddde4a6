#!/usr/bin/env bash
# keyfer eval of one model on every adapter's fixture (tests/dataset_fixtures.py), collected into
# one JSON keyed by case, run from the repository root:
#   studies/2026-11-cross-dataset-fixtures/cross_dataset_fixtures.sh MODEL OUT.json
set -euo pipefail
model=${1:-keyfer-ferplus}
out=${2:-docs/results/cross_dataset_fixtures.json}
F=$(mktemp -d)
python -m tests.dataset_fixtures "$F" > /dev/null
run() {  # case dataset root split
    keyfer eval --model "$model" --dataset "$2" --root "$3" --split "$4" --json "$F/$1.json" 2>&1 | tail -2
}
run rafdb_test rafdb "$F/rafdb" test
run affectnet_validation affectnet "$F/affectnet" validation
run affectnet7_validation affectnet7 "$F/affectnet" validation
run fer2013_publictest fer2013 "$F/fer2013" publictest
run fer2013_folders_test fer2013 "$F/fer2013_folders" test
run ferplus_fixture_train ferplus tests/data/ferplus_fixture train
python - "$F" "$out" <<'PY'
import json, sys
from pathlib import Path
cases = ["rafdb_test", "affectnet_validation", "affectnet7_validation", "fer2013_publictest",
         "fer2013_folders_test", "ferplus_fixture_train"]
reports = {c: json.loads((Path(sys.argv[1]) / f"{c}.json").read_text()) for c in cases}
Path(sys.argv[2]).write_text(json.dumps(reports, indent=1) + "\n")
PY
