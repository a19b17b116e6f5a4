"""``scripts/gpu-check``: scorepack's GPU paths checked on a real GPU, and a short benchmark.

Runs with whatever frameworks the machine has (``scripts/gpu-check`` installs scorepack,
its plugins and the small wheels the machine lacks), and writes one Markdown report:

1. the machine: GPU, compute capability, driver, CUDA, Python, framework versions, the
   architectures torch was built for;
2. every GPU test of the suite (``pytest -m gpu``; each is one GPU path: device placement,
   half precision with lifted constants, TorchScript half vs fp32, pinned staging, nvJPEG,
   warm-up, ONNX Runtime CUDA/TensorRT/CUDA graphs/IOBinding, TensorFlow, device memory
   given back by an unload): ran, skipped with the reason, or failed with the error;
3. a benchmark, ResNet50 (random weights) in each backend the GPU can run: in-process at
   batch 1/8/32 and served (JPEG in, JSON out, the embedded server) at concurrency 1 and
   32, fp32 and fp16; the first request after ready at each batch size against the
   steady latency; and for PyTorch, nvJPEG decode on the GPU against CPU decode served at
   concurrency 32.

Everything has a time limit, so the whole run stays under 8 minutes. Nothing here
downloads anything.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "images" / "sample.jpg"
#: the test files holding GPU tests; each ``@pytest.mark.gpu`` test is one GPU path
GPU_TESTS = (
    "tests/test_pytorch.py",
    "tests/test_onnx.py",
    "tests/test_tensorflow.py",
    "tests/test_gpu_levers.py",
    "tests/test_gpu_unload.py",
)
BATCHES = (1, 8, 32)
DRIVER_CUDA = "driver's CUDA"
CONCURRENCY = (1, 32)


def _say(text: str) -> None:
    print(f"gpu-check: {text}", file=sys.stderr, flush=True)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(args: list[str], timeout: float = 30) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({type(exc).__name__}: {exc})"
    return done.stdout.strip() or done.stderr.strip()


# --- the machine ---------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the report's first table says about the machine."""
    facts: dict[str, str] = {}
    query = _run(
        [
            "nvidia-smi",
            "--query-gpu=name,memory.total,compute_cap,driver_version",
            "--format=csv,noheader",
        ]
    )
    facts["GPU"] = query.splitlines()[0] if query else "?"
    header = _run(["nvidia-smi"])
    cuda = next((part for part in header.split("|") if "CUDA Version" in part), "")
    facts[DRIVER_CUDA] = cuda.split("CUDA Version:")[-1].strip() or "?"
    facts["Python"] = platform.python_version()
    facts["OS"] = platform.platform()
    for dist in ("scorepack", "torch", "torchvision", "onnxruntime", "onnxruntime-gpu"):
        facts[dist] = _version(dist) or "not installed"
    facts["tensorflow"] = next(
        (v for d in ("tensorflow", "tensorflow-cpu") if (v := _version(d))), "not installed"
    )
    try:
        torch = importlib.import_module("torch")
        facts["torch CUDA"] = str(torch.version.cuda)
        facts["torch sees a GPU"] = str(torch.cuda.is_available())
        if torch.cuda.is_available():
            facts["torch arch list"] = " ".join(torch.cuda.get_arch_list())
            major, minor = torch.cuda.get_device_capability()
            facts["capability"] = f"sm_{major}{minor}"
    except ImportError:
        pass
    try:
        ort = importlib.import_module("onnxruntime")
        facts["onnxruntime providers"] = ", ".join(ort.get_available_providers())
    except ImportError:
        pass
    return facts


# --- the GPU paths: the suite's GPU tests ------------------------------------------------


@dataclass
class PathResult:
    """One GPU test: ran (passed), skipped with its reason, or failed with its error."""

    name: str
    outcome: str
    detail: str = ""
    seconds: float = 0.0


def gpu_paths(out: Path, timeout: float) -> list[PathResult]:
    """Run ``pytest -m gpu`` over the GPU test files and read its JUnit XML."""
    xml = out / "gpu-tests.xml"
    args = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    args += [f"--junitxml={xml}", *GPU_TESTS]
    _say("running the GPU tests (pytest -m gpu)")
    try:
        done = subprocess.run(
            args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        log = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        log = f"pytest did not finish within {timeout:.0f} s: {exc}"
    (out / "gpu-tests.log").write_text(log, "utf-8")
    if not xml.is_file():
        return [PathResult("pytest -m gpu", "failed", log.strip().splitlines()[-1] if log else "")]
    return read_junit(xml)


def read_junit(xml: Path) -> list[PathResult]:
    """Each test case of pytest's JUnit XML as a path; a test that ran gives the properties
    it recorded (``record_property``: what it measured) as its detail."""
    results = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        seconds = float(case.get("time") or 0)
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None or error is not None:
            node = failure if failure is not None else error
            message = (node.get("message") or node.text or "").strip() if node is not None else ""
            results.append(PathResult(name, "failed", message.splitlines()[0][:300], seconds))
        elif skipped is not None:
            reason = (skipped.get("message") or "").strip()
            results.append(PathResult(name, "skipped", reason[:300], seconds))
        else:
            recorded = [
                f"{p.get('name')}: {p.get('value')}" for p in case.iter("property") if p.get("name")
            ]
            results.append(PathResult(name, "ran", "; ".join(recorded)[:300], seconds))
    return results


# --- the benchmark -----------------------------------------------------------------------


@dataclass
class Row:
    """One benchmark measurement."""

    backend: str
    precision: str
    mode: str
    size: int
    rate: float | None = None
    p50_ms: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _resnet50_torch(work: Path) -> Path:
    torch = importlib.import_module("torch")
    models = importlib.import_module("torchvision.models")
    model = models.resnet50(weights=None).eval()
    example = torch.rand(2, 3, 224, 224)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    path = work / "resnet50.pt2"
    torch.export.save(program, str(path))
    return path


def _resnet50_onnx(work: Path) -> Path:
    torch = importlib.import_module("torch")
    models = importlib.import_module("torchvision.models")
    model = models.resnet50(weights=None).eval()
    path = work / "resnet50.onnx"
    torch.onnx.export(
        model,
        (torch.rand(1, 3, 224, 224),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return path


def _resnet50_tf(work: Path) -> Path:
    tf = importlib.import_module("tensorflow")
    model = tf.keras.applications.ResNet50(weights=None)
    path = work / "resnet50_tf"
    model.export(str(path))
    return path


def _available() -> dict[str, tuple[Callable[[Path], Path], list[tuple[str, dict[str, str]]]]]:
    """Backends the GPU can run here → (model builder, [(precision, options)])."""
    found: dict[str, tuple[Callable[[Path], Path], list[tuple[str, dict[str, str]]]]] = {}
    try:
        torch = importlib.import_module("torch")
        importlib.import_module("torchvision")
        if torch.cuda.is_available():
            found["pytorch"] = (_resnet50_torch, [("fp32", {}), ("fp16", {"half": "true"})])
    except ImportError:
        pass
    try:
        ort = importlib.import_module("onnxruntime")
        if "CUDAExecutionProvider" in ort.get_available_providers():
            found["onnx"] = (
                _resnet50_onnx,
                [("fp32", {}), ("fp32 iobinding", {"iobinding": "true"})],
            )
    except ImportError:
        pass
    try:
        tf = importlib.import_module("tensorflow")
        if tf.config.list_physical_devices("GPU"):
            found["tensorflow"] = (
                _resnet50_tf,
                [("fp32", {}), ("fp16", {"precision": "fp16"})],
            )
    except ImportError:
        pass
    return found


def _timed(call: Callable[[], Any], seconds: float) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


@contextmanager
def _scorer(path: Path, options: dict[str, str]) -> Iterator[Any]:
    import scorepack
    from scorepack import BatchingConfig, PreprocessConfig, ScoringConfig

    config = ScoringConfig(
        preprocess=PreprocessConfig(preset="imagenet"),
        batching=BatchingConfig(max_batch_size=32, max_delay_ms=2.0),
    )
    scorer = scorepack.load(path, device="cuda", options=options, config=config)
    try:
        yield scorer
    finally:
        scorer.close()


def _caller(scorer: Any, batch: dict[str, np.ndarray]) -> Callable[[], Any]:
    return lambda: scorer.predict(batch)


def _inprocess(scorer: Any, backend: str, precision: str, seconds: float) -> list[Row]:
    rows = []
    spec = scorer.signature.inputs[0]
    plan = scorer.image_plan
    shape = (
        (plan.height, plan.width, plan.channels)
        if plan.layout == "NHWC"
        else (plan.channels, plan.height, plan.width)
    )
    rng = np.random.default_rng(0)
    for size in BATCHES:
        batch = {spec.name: rng.random((size, *shape), dtype=np.float32)}
        first_start = time.perf_counter()
        scorer.predict(batch)  # the first call at this size after ready (warm-up ran)
        first = time.perf_counter() - first_start
        times = _timed(_caller(scorer, batch), seconds)
        median = statistics.median(times)
        rows.append(
            Row(
                backend,
                precision,
                "in-process",
                size,
                size / median,
                median * 1000,
                f"first call {first * 1000:.1f} ms = {first / median:.2f}x steady",
            )
        )
    return rows


def _served(
    scorer: Any, backend: str, precision: str, seconds: float, sizes: tuple[int, ...]
) -> list[Row]:
    from scorepack.bench.run import BenchConfig, run_bench
    from scorepack.server import BackgroundServer

    rows = []
    body = SAMPLE.read_bytes()
    with BackgroundServer(scorer) as server:
        for concurrency in sizes:
            result = run_bench(
                BenchConfig(
                    url=server.url + "/score",
                    body=body,
                    concurrency=concurrency,
                    duration_s=seconds,
                    content_type="image/jpeg",
                    warmup_s=1.0,
                )
            )
            ok = result.statuses.get("200", 0)
            note = "" if ok == result.requests else f"statuses {result.statuses}"
            rows.append(
                Row(
                    backend,
                    precision,
                    "served",
                    concurrency,
                    result.rps,
                    result.latency_ms.get("p50"),
                    note,
                )
            )
    return rows


def benchmark(seconds: float, deadline: float) -> tuple[list[Row], list[str]]:
    """The benchmark rows, and what was not measured (with the reason)."""
    rows: list[Row] = []
    missing: list[str] = []
    found = _available()
    for backend in ("pytorch", "onnx", "tensorflow"):
        if backend not in found:
            missing.append(f"{backend}: no GPU build of its framework here")
    work = Path(tempfile.mkdtemp(prefix="scorepack-gpu-check-"))
    try:
        for backend, (build, variants) in found.items():
            try:
                _say(f"building ResNet50 for {backend}")
                path = build(work)
            except Exception as exc:
                missing.append(f"{backend}: the model could not be built here: {exc!r}")
                continue
            if backend == "pytorch" and importlib.util.find_spec("torchvision") is not None:
                variants = [*variants, ("fp32 nvJPEG", {"gpu_decode": "true"})]
            for precision, options in variants:
                if time.monotonic() > deadline:
                    missing.append(f"{backend} {precision}: out of time")
                    continue
                _say(f"measuring {backend} {precision}")
                try:
                    with _scorer(path, options) as scorer:
                        if "nvJPEG" not in precision:
                            rows += _inprocess(scorer, backend, precision, seconds)
                        sizes = (32,) if "nvJPEG" in precision else CONCURRENCY
                        rows += _served(scorer, backend, precision, seconds * 2, sizes)
                except Exception as exc:
                    missing.append(f"{backend} {precision}: failed: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, missing


# --- the report ----------------------------------------------------------------------------


def report(
    facts: dict[str, str], paths: list[PathResult], rows: list[Row], missing: list[str]
) -> str:
    """The Markdown report."""
    lines = [
        f"# scorepack gpu-check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        "",
        "## GPU paths (`pytest -m gpu`)",
        "",
    ]
    counts = {o: sum(p.outcome == o for p in paths) for o in ("ran", "skipped", "failed")}
    lines.append(", ".join(f"{n} {o}" for o, n in counts.items()))
    lines += ["", "| path | outcome | why / error |", "| --- | --- | --- |"]
    lines += [f"| `{p.name}` | {p.outcome} | {p.detail.replace('|', '/')} |" for p in paths]
    lines += [
        "",
        "## Benchmark: ResNet50 (random weights), JPEG in, JSON out for served",
        "",
        "| backend | precision | mode | batch / concurrency | images/s | p50 ms | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        rate = f"{r.rate:.1f}" if r.rate is not None else "-"
        p50 = f"{r.p50_ms:.2f}" if r.p50_ms is not None else "-"
        lines.append(
            f"| {r.backend} | {r.precision} | {r.mode} | {r.size} | {rate} | {p50} | {r.note} |"
        )
    if missing:
        lines += ["", "Not measured:", "", *(f"- {m}" for m in missing)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="the report [default: gpu-check-TIME.md here]")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for everything")
    parser.add_argument("--no-tests", action="store_true", help="the benchmark only")
    parser.add_argument("--no-bench", action="store_true", help="the GPU tests only")
    args = parser.parse_args(argv)
    started = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu-check-{stamp}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    facts = machine()
    _say(f"{facts['GPU']}, driver CUDA {facts.get(DRIVER_CUDA)}")
    work = Path(tempfile.mkdtemp(prefix="scorepack-gpu-tests-"))
    paths = [] if args.no_tests else gpu_paths(work, timeout=args.budget * 0.5)
    if (work / "gpu-tests.log").is_file():
        shutil.copy(work / "gpu-tests.log", out.with_suffix(".tests.log"))
    rows: list[Row] = []
    missing: list[str] = []
    if not args.no_bench:
        rows, missing = benchmark(args.seconds, started + args.budget)
    out.write_text(report(facts, paths, rows, missing), "utf-8")
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "machine": facts,
                "paths": [p.__dict__ for p in paths],
                "rows": [r.__dict__ for r in rows],
                "missing": missing,
            },
            indent=2,
        ),
        "utf-8",
    )
    _say(f"wrote {out} in {time.monotonic() - started:.0f} s")
    return 1 if any(p.outcome == "failed" for p in paths) else 0


if __name__ == "__main__":
    raise SystemExit(main())
