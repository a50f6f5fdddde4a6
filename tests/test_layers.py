"""keyfer's layers import one way: a module imports its own layer and the layers below it only.

The imports are read from the source with ``ast`` (module-level, function-level and
``TYPE_CHECKING`` imports alike), so a late import inside a function cannot hide a wrong edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "keyfer"

# Bottom to top: (layer, its modules). An entry names a module and its submodules; the package
# itself ("keyfer", its __init__) is matched exactly. A new module must be given a layer here.
LAYERS: list[tuple[str, list[str]]] = [
    # Errors, devices, affine maps and box IoU, the face pipeline (detector, FaceMesh, alignment,
    # pose) and the preprocessing of a model's input (pre-crop, gray conversion): what every layer
    # may use.
    (
        "faces",
        """keyfer.errors keyfer.deprecation keyfer._version keyfer.device keyfer.geometry
        keyfer.faces keyfer.preprocessing""".split(),
    ),
    # The expression networks, the registry of shipped models, checkpoint files: create_model.
    ("models", "keyfer.nkf keyfer.models".split()),
    # Photos and videos in, faces and expressions out: the Python API, the crop predictor (TTA,
    # temperature) that eval shares, the batch runner, ONNX export, media and record I/O,
    # tracking, speed measurement. `import keyfer` stops here.
    (
        "inference",
        """keyfer keyfer.api keyfer.crop_predictor keyfer.results keyfer.drawing keyfer.runner
        keyfer.predict keyfer.export keyfer.io keyfer.tracking keyfer.bench""".split(),
    ),
    # Dataset adapters: official on-disk formats read into labelled samples.
    ("data", ["keyfer.data"]),
    # Scores, calibration and plots of predictions, shared by evaluation and training.
    ("metrics", ["keyfer.metrics"]),
    # Models scored on datasets: expression accuracy, robustness, landmark accuracy.
    ("evaluation", "keyfer.evaluate keyfer.robustness keyfer.landmark_eval".split()),
    # Training runs: configs, caches, engines, checkpoints with their experiment.
    ("training", ["keyfer.train"]),
    # The command line over all of the above.
    ("cli", "keyfer.cli keyfer.__main__".split()),
]

NOT_IMPORTED = ("keyfer.resources",)
"""Files handed to other interpreters (``keyfer bench --peer-python``), never imported."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if not module_name(path).startswith(NOT_IMPORTED)
}


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (by its longest matching entry), or None."""
    best, best_length = None, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            matches = module == entry or (entry != "keyfer" and module.startswith(entry + "."))
            if matches and len(entry) > best_length:
                best, best_length = index, len(entry)
    return best


def imported_modules(module: str, path: Path) -> set[str]:
    """The keyfer modules that ``module``'s source imports, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from keyfer import faces` imports the module keyfer.faces
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name == "keyfer" or name.startswith("keyfer.")}


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unplaced, f"give these modules a layer in tests/test_layers.py: {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_its_layer_and_below(module: str) -> None:
    own = layer_of(module)
    if own is None:
        pytest.skip("no layer (see test_every_module_has_a_layer)")
    upward = {
        target: LAYERS[layer][0]
        for target in imported_modules(module, MODULES[module])
        if (layer := layer_of(target)) is not None and layer > own
    }
    assert not upward, f"{module} ({LAYERS[own][0]}) imports higher layers: {upward}"


def test_import_keyfer_loads_no_training_data_or_yaml() -> None:
    """The Python API loads neither the training nor the dataset code, nor pyyaml."""
    code = (
        "import keyfer, sys; print(sorted(m for m in sys.modules if m.startswith("
        "('keyfer.train', 'keyfer.data')) or m == 'yaml'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
