"""CPU throughput of the FaceMesh and BlazeFace ports against MediaPipe's TFLite models in LiteRT.

Every configuration (model, batch, threads) runs both backends on the same random inputs: a
warm-up, then repeats in which torch and LiteRT take turns, about ``--seconds`` timed per
backend; the median repeat is reported in faces (crops or images) per second. LiteRT takes one
image per call; at batch 32 it is timed both looping over the images and with the input resized
to 32, and the faster is reported. Torch is measured again after raising glibc's malloc
thresholds (``--no-mallopt`` skips that). The end-to-end FacePipeline time on
``examples/astronaut.png`` is reported with tiling on and off.

    python -m benchmarks.bench_faces --threads 2 1 --out docs/results/bench_faces.json
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from ai_edge_litert.interpreter import Interpreter

from keyfer.faces.blazeface import BlazeFace
from keyfer.faces.facemesh import FaceMesh
from keyfer.faces.pipeline import FacePipeline
from keyfer.io.images import read_image
from tools.convert_mediapipe import tflite_bytes

log = logging.getLogger("bench_faces")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_IMAGE = ROOT / "examples" / "astronaut.png"
BATCHES = (1, 32)


@dataclass(frozen=True)
class ModelSpec:
    """A ported network, its TFLite original and its input: (B, 3, size, size) in [low, 1]."""

    name: str
    tflite: str
    size: int
    low: float
    load: Callable[[], torch.nn.Module]


MODELS = (
    ModelSpec("facemesh", "facemesh", 192, 0.0, FaceMesh.from_pretrained),
    ModelSpec("blazeface", "blazeface_short_range", 128, -1.0, BlazeFace.from_pretrained),
)


@dataclass(frozen=True)
class Result:
    """One configuration's throughput in faces per second (median and spread of the repeats)."""

    model: str
    backend: str
    allocator: str
    threads: int
    batch: int
    mode: str
    per_second: float
    per_second_min: float
    per_second_max: float
    calls_per_repeat: int


def time_interleaved(
    fns: dict[str, Callable[[], object]], seconds: float, repeats: int
) -> dict[str, tuple[list[float], int]]:
    """Seconds per call of each repeat of each function, about ``seconds`` timed per function.

    The functions take turns within every repeat, so a burst of load from other jobs falls on
    all of them alike. Returns {name: (per-repeat seconds per call, calls per repeat)}.
    """
    calls = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        while time.perf_counter() - start < 0.5:
            fn()
        start = time.perf_counter()
        fn()
        calls[name] = max(1, round(seconds / repeats / (time.perf_counter() - start)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: (times[name], calls[name]) for name in fns}


def result(
    spec: ModelSpec, backend: str, threads: int, batch: int, mode: str, timing, allocator: str
) -> Result:
    """Per-call times -> faces per second."""
    times, calls = timing
    rates = [batch / t for t in times]
    return Result(
        spec.name,
        backend,
        allocator,
        threads,
        batch,
        mode,
        statistics.median(rates),
        min(rates),
        max(rates),
        calls,
    )


def litert_interpreter(spec: ModelSpec, threads: int, batch: int = 1) -> Interpreter:
    """A LiteRT interpreter for ``spec``, its input resized to ``batch`` when that is not 1."""
    interpreter = Interpreter(model_content=tflite_bytes(spec.tflite), num_threads=threads)
    if batch != 1:
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, [batch, spec.size, spec.size, 3])
    interpreter.allocate_tensors()
    return interpreter


def litert_runner(interpreter: Interpreter, images: np.ndarray) -> Callable[[], list[np.ndarray]]:
    """A call that runs (N, H, W, 3) ``images`` in chunks of the interpreter's batch size."""
    index = interpreter.get_input_details()[0]["index"]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    chunk = int(interpreter.get_input_details()[0]["shape"][0])

    def run() -> list[np.ndarray]:
        results = []
        for start in range(0, len(images), chunk):
            interpreter.set_tensor(index, images[start : start + chunk])
            interpreter.invoke()
            results.append([interpreter.get_tensor(i).reshape(chunk, -1) for i in outputs])
        return [np.concatenate(parts) for parts in zip(*results, strict=True)]

    return run


def torch_outputs(spec: ModelSpec, model: torch.nn.Module, images: torch.Tensor) -> list:
    """The torch outputs flattened like LiteRT's: per image, mesh or regressors, then scores."""
    if spec.name == "facemesh":
        out = model(images)
        return [out.mesh.flatten(1), torch.logit(out.presence.double()).float()[:, None]]
    regressors, logits = model(images)
    return [regressors.flatten(1), logits]


def inputs(spec: ModelSpec) -> tuple[np.ndarray, torch.Tensor]:
    """The same random images for both backends: (N, H, W, 3) for LiteRT, (N, 3, H, W) for torch."""
    rng = np.random.default_rng(0)
    nhwc = rng.uniform(spec.low, 1.0, (max(BATCHES), spec.size, spec.size, 3)).astype(np.float32)
    return nhwc, torch.from_numpy(nhwc).permute(0, 3, 1, 2).contiguous()


def bench_model(
    spec: ModelSpec, threads: int, seconds: float, repeats: int, allocator: str
) -> tuple[list[Result], dict]:
    """Torch and LiteRT throughput at every batch size, timed in turns, and their agreement.

    LiteRT at batch > 1 is reported in its faster mode: ``loop`` or ``resized``.
    """
    torch.set_num_threads(threads)
    nhwc, nchw = inputs(spec)
    model = spec.load()
    with torch.inference_mode():
        ours = [t.numpy() for t in torch_outputs(spec, model, nchw)]
    theirs = litert_runner(litert_interpreter(spec, threads), nhwc)()
    agreement = {
        "max_abs_diff_torch_vs_litert": [
            float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True)
        ]
    }
    results = []
    for batch in BATCHES:

        @torch.inference_mode()
        def run_torch(images: torch.Tensor = nchw[:batch]) -> object:
            return model(images)

        fns = {
            "torch": run_torch,
            "litert": litert_runner(litert_interpreter(spec, threads), nhwc[:batch]),
        }
        if batch > 1:
            resized = litert_runner(litert_interpreter(spec, threads, batch), nhwc[:batch])
            diffs = [np.abs(a - b[:batch]).max() for a, b in zip(resized(), theirs, strict=True)]
            agreement["max_abs_diff_litert_resized_vs_loop"] = float(max(diffs))
            fns["litert resized"] = resized
        timings = time_interleaved(fns, seconds, repeats)
        mode = "loop" if batch > 1 else "single"
        results.append(
            result(spec, "torch", threads, batch, "batched", timings["torch"], allocator)
        )
        litert = [result(spec, "litert", threads, batch, mode, timings["litert"], allocator)]
        if batch > 1:
            timing = timings["litert resized"]
            litert.append(result(spec, "litert", threads, batch, "resized", timing, allocator))
        log.info("%s", [results[-1], *litert])
        results.append(max(litert, key=lambda r: r.per_second))
    return results, agreement


def raise_malloc_thresholds() -> None:
    """Keep freed memory in glibc's heap instead of returning it to the OS.

    With the defaults, PyTorch's large activations are mmapped and page-faulted afresh on every
    call. This is what ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:``
    ``glibc.malloc.trim_threshold=1073741824`` (or jemalloc/tcmalloc) does for a whole process.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)):
        raise RuntimeError("mallopt refused the thresholds")


def bench_pipeline(threads: int, seconds: float, repeats: int, allocator: str) -> list[dict]:
    """End-to-end FacePipeline seconds per call on the example image, tiling on and off."""
    torch.set_num_threads(threads)
    image = read_image(EXAMPLE_IMAGE)
    rows = []
    for tiling in (True, False):
        pipeline = FacePipeline(tiling=tiling)
        faces = pipeline(image)
        times, calls = time_interleaved(
            {"pipeline": lambda p=pipeline: p(image)}, seconds, repeats
        )["pipeline"]
        rows.append(
            {
                "allocator": allocator,
                "threads": threads,
                "tiling": tiling,
                "image": EXAMPLE_IMAGE.name,
                "image_shape": list(image.shape),
                "refine": pipeline.refine,
                "faces": len(faces),
                "seconds_per_image": statistics.median(times),
                "seconds_min": min(times),
                "seconds_max": max(times),
                "calls_per_repeat": calls,
            }
        )
        log.info("%s", rows[-1])
    return rows


def machine() -> dict:
    """CPU model, core count and library versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
    ]
    return {
        "cpu_model": models[0] if models else platform.processor(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ai_edge_litert": version("ai-edge-litert"),
        "numpy": np.__version__,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }


def comparisons(results: list[Result]) -> list[dict]:
    """Torch and LiteRT side by side for each (model, threads, batch), per allocator."""
    rows = []
    for theirs in (r for r in results if r.backend == "litert" and r.allocator == "default"):
        key = (theirs.model, theirs.threads, theirs.batch)
        row = {"model": theirs.model, "threads": theirs.threads, "batch": theirs.batch}
        row.update({"litert": {}, "litert_mode": {}, "torch": {}, "ratio": {}})
        for r in results:
            if (r.model, r.threads, r.batch) != key:
                continue
            if r.backend == "litert":
                row["litert"][r.allocator] = r.per_second
                row["litert_mode"][r.allocator] = r.mode
            else:
                row["torch"][r.allocator] = r.per_second
        for allocator, rate in row["torch"].items():
            row["ratio"][allocator] = rate / row["litert"][allocator]
        rows.append(row)
    return rows


def markdown(report: dict) -> str:
    """The report as markdown tables, with the command that made it."""
    info = report["machine"]
    lines = [
        "# FaceMesh and BlazeFace on CPU: PyTorch port vs LiteRT",
        "",
        f"Command: `{report['command']}`",
        "",
        f"CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs); "
        f"torch {info['torch']}, ai-edge-litert {info['ai_edge_litert']}.",
        "",
        "Throughput is the median of the repeats, in crops/s (FaceMesh) or images/s (BlazeFace),",
        "on the same random inputs; torch and LiteRT take turns within every repeat. LiteRT at",
        "batch 32 is the faster of `loop` (one image per call) and `resized` (input resized",
        "to 32). torch `default` runs with glibc's default malloc; `mallopt` after raising",
        "glibc's mmap and trim thresholds, so freed activations are reused instead of being",
        "page-faulted afresh on every call (what `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=",
        "33554432:glibc.malloc.trim_threshold=1073741824`, jemalloc or tcmalloc do for a whole",
        "process). Ratio = torch / LiteRT.",
        "",
        "| model | threads | batch | LiteRT /s | LiteRT mode | torch /s | ratio "
        "| LiteRT /s (mallopt run) | torch mallopt /s | ratio mallopt |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["comparisons"]:
        cells = [row["model"], row["threads"], row["batch"]]
        for allocator in ("default", "mallopt"):
            if allocator not in row["torch"]:
                cells += ["-"] * 3
                continue
            cells.append(f"{row['litert'][allocator]:.0f}")
            if allocator == "default":
                cells.append(row["litert_mode"][allocator])
            cells += [f"{row['torch'][allocator]:.0f}", f"{row['ratio'][allocator]:.2f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        f"`FacePipeline(tiling=...)` on `{EXAMPLE_IMAGE.name}` end to end (detection, alignment,",
        "FaceMesh; default settings otherwise), median ms per image:",
        "",
        "| allocator | threads | tiling | refine | faces | ms per image |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["pipeline"]:
        lines.append(
            f"| {row['allocator']} | {row['threads']} | {row['tiling']} | {row['refine']} "
            f"| {row['faces']} "
            f"| {1e3 * row['seconds_per_image']:.1f} |"
        )
    load = ", ".join(f"{a:.1f}" for a in report["load_average"]["end"])
    lines += [
        "",
        "Wall-clock timings on a shared machine; other jobs add noise, and PyTorch's OpenMP",
        "threads suffer most when a core is taken (1-minute load average at the start "
        f"{report['load_average']['start'][0]:.1f}, at the end {load}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="thread counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per config")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per config")
    parser.add_argument(
        "--no-mallopt",
        action="store_true",
        help="skip the torch runs with raised malloc thresholds",
    )
    parser.add_argument("--out", type=Path, help="JSON report; a .md table is written beside it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    timing = (args.seconds, args.repeats)

    load_start = os.getloadavg()
    results: list[Result] = []
    agreement = {}
    pipeline = []
    allocators = ["default"] if args.no_mallopt else ["default", "mallopt"]
    for allocator in allocators:
        if allocator == "mallopt":
            raise_malloc_thresholds()
        for threads in args.threads:
            for spec in MODELS:
                rows, agreement[f"{spec.name} threads={threads}"] = bench_model(
                    spec, threads, *timing, allocator
                )
                results += rows
            pipeline += bench_pipeline(threads, *timing, allocator)
    report = {
        "command": shlex.join(["python", "-m", "benchmarks.bench_faces", *sys.argv[1:]]),
        "machine": machine(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "seconds_per_config": args.seconds,
        "repeats": args.repeats,
        "comparisons": comparisons(results),
        "results": [asdict(r) for r in results],
        "agreement": agreement,
        "pipeline": pipeline,
    }
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
