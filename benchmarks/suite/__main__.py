"""Run the benchmark suite: ``scripts/bench [--quick] [--device cpu|cuda] [--backends ...]``.

``--backends`` takes variant names (``benchmarks.suite.models.VARIANTS``): a backend with
some levers on, e.g. ``pytorch-gpu-decode`` or ``onnx-cuda-graph`` with ``--device cuda``.
Writes benchmarks/results/<time>.json and rewrites the generated part of
benchmarks/RESULTS.md for that device. Not part of the test suite: nothing here passes or
fails a build.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from scorepack.hugepages import tunables_with_huge_pages

from . import machine, models, protocols, report, servers

RESULTS = Path(__file__).resolve().parents[1] / "results"
CONCURRENCY = (1, 8, 32)
#: the decode stage as it was before issue 13: every admitted request decoded at once, on
#: min(8, cores + 2) threads at the process's priority (the "giveway" part's A/B baseline)
NO_GIVE_WAY = {
    "SCOREPACK_DECODE_LOOKAHEAD": "0",
    "SCOREPACK_DECODE_NICE": "0",
    "SCOREPACK_DECODE_THREADS": str(min(8, (os.cpu_count() or 1) + 2)),
}


def _installed(backend: str) -> bool:
    module = {"tensorflow": "tensorflow", "onnx": "onnxruntime", "pytorch": "torch"}[
        backend.split("-")[0]
    ]
    return importlib.util.find_spec(module) is not None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def inprocess_command(
    model: models.BenchModel, image: Path, batches: str, seconds: float
) -> list[str]:
    """The in-process measurement's command line, device and options included."""
    options = [arg for option in model.options for arg in ("-O", option)]
    return [
        sys.executable,
        "-m",
        "benchmarks.suite.inprocess",
        "--backend",
        model.backend,
        "--model",
        str(model.path),
        "--preset",
        model.preset,
        "--image",
        str(image),
        "--batches",
        batches,
        "--seconds",
        str(seconds),
        "--label",
        model.label,
        "--device",
        model.device,
        *options,
    ]


def in_process(model: models.BenchModel, image: Path, batches: str, seconds: float) -> list[Any]:
    _say(f"  in-process {model.label}/{model.name} on {model.device}, batches {batches}")
    # with the allocator setting scorepack's servers run with (hugepages.py), so that the
    # ratios to these limits measure the serving, not glibc's huge pages
    # (benchmarks/micro/huge_pages.py measures those on their own)
    tunables = tunables_with_huge_pages(os.environ)
    out = subprocess.run(
        inprocess_command(model, image, batches, seconds),
        capture_output=True,
        text=True,
        check=True,
        cwd=servers.ROOT,
        env={**os.environ, **({"GLIBC_TUNABLES": tunables} if tunables else {})},
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def decode_scaling(seconds: float) -> dict[str, Any]:
    """Decode-only images/s at 1..cores workers (benchmarks/micro/decode_scaling.py)."""
    _say("decode scaling, 1..cores workers, threads and processes")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.micro.decode_scaling",
            "--json",
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=servers.ROOT,
    )
    return dict(json.loads(out.stdout))


def under_load(
    kind: str,
    starter: Any,
    image: Path,
    levels: tuple[int, ...],
    args: Any,
    label: str,
    model: models.BenchModel | None = None,
) -> dict[str, Any]:
    _say(f"  {label}: starting")
    with starter as server:
        runs = []
        for c in levels:
            result = servers.load(server.url, image, c, args.duration, args.warmup)
            rps, p50 = result["rps"], result["latency_ms"].get("p50", 0)
            _say(f"  {label}: c={c} {rps:.1f} req/s p50 {p50:.1f} ms errors {result['errors']}")
            runs.append(result)
        preferred = server.preferred_batch_size()
        if preferred is not None:
            _say(f"  {label}: preferred batch size {preferred}")
        return {
            "server": kind,
            "label": label,
            "device": model.device if model else "cpu",
            "options": list(model.options) if model else [],
            "ready_s": server.ready_s,
            # the batch size its batcher gathered (measured at warm-up unless set)
            "preferred_batch_size": preferred,
            "peak_rss_mib": server.peak_rss_mib(),
            "runs": runs,
        }


#: the "batchauto" part loads a fresh auto server at each level until its batch size was
#: tuned under load, in runs of --tune seconds, at most this many
TUNE_RUNS = 8


def tuned_under_load(
    model: models.BenchModel, image: Path, levels: tuple[int, ...], args: Any, label: str
) -> dict[str, Any]:
    """``--preferred-batch-size auto``: a fresh server per level (the size is tuned under the
    load it first meets, then fixed), loaded at that level until ``/info`` says the size was
    tuned under load (bounded), then measured like the others. Each run carries the size
    it ran with; ``tuning`` what ``/info`` said (the candidates' cycles under load)."""
    runs, tuning, ready, peak = [], [], [], []
    for c in levels:
        with servers.embedded(model, "--preferred-batch-size", "auto") as server:
            began = time.monotonic()
            sizing = server.info().get("batch_sizing", {})
            tries = 0
            # c=1 forms no backlog: nothing is tuned there (the warm-up's size serves)
            while c > 1 and sizing.get("how") != "tuned under load" and tries < TUNE_RUNS:
                servers.load(server.url, image, c, args.tune, 0.5)
                sizing = server.info().get("batch_sizing", {})
                tries += 1
            tuned_s = round(time.monotonic() - began, 1)
            result = servers.load(server.url, image, c, args.duration, args.warmup)
            preferred = server.preferred_batch_size()
            result["preferred_batch_size"] = preferred
            _say(
                f"  {label}: c={c} {result['rps']:.1f} req/s, preferred batch size "
                f"{preferred} ({sizing.get('how')}, after {tuned_s} s of tuning load)"
            )
            runs.append(result)
            tuning.append(
                {
                    "concurrency": c,
                    "tuning_load_s": tuned_s,
                    "preferred_batch_size": preferred,
                    "batch_sizing": sizing,
                }
            )
            ready.append(server.ready_s)
            peak.append(server.peak_rss_mib())
    return {
        "server": "embedded",
        "label": label,
        "device": model.device,
        "options": list(model.options),
        "ready_s": max((r for r in ready if r is not None), default=None),
        # the size the last level's server settled on (each run has its own)
        "preferred_batch_size": runs[-1]["preferred_batch_size"] if runs else None,
        "peak_rss_mib": max(peak, default=0.0),
        "runs": runs,
        "tuning": tuning,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where the models run"
    )
    parser.add_argument(
        "--backends",
        default="",
        help="comma list of variants (default for cpu: "
        f"{','.join(models.DEFAULT_VARIANTS['cpu'])}; for cuda: "
        f"{','.join(models.DEFAULT_VARIANTS['cuda'])}); all: {','.join(models.VARIANTS)}",
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for trying things")
    parser.add_argument("--duration", type=float, default=None, help="seconds per load level")
    parser.add_argument(
        "--only",
        default="",
        help="comma list: limits,embedded,exact,giveway,batchauto,batch8,azureml,baseline,tiny,"
        "decode,protocols (default: all but giveway, batchauto and batch8, the A/Bs of the "
        "decode stage against how it was before and of a preferred batch size tuned under "
        "load (a fresh server per level) or fixed at 8 against the default's full batches)",
    )
    parser.add_argument(
        "--tune",
        type=float,
        default=None,
        help="batchauto: seconds per tuning run before the measured one (default 15; "
        f"--quick 3), at most {TUNE_RUNS} runs",
    )
    parser.add_argument("--label", default="", help="a note stored with the results")
    args = parser.parse_args()
    args.duration = args.duration or (4.0 if args.quick else 12.0)
    args.warmup = 1.0 if args.quick else 3.0
    args.tune = args.tune or (3.0 if args.quick else 15.0)
    seconds = 2.0 if args.quick else 6.0
    parts = set(filter(None, args.only.split(","))) or {
        "limits",
        "embedded",
        "exact",
        "azureml",
        "baseline",
        "tiny",
        "decode",
        "protocols",
    }
    names = [b for b in args.backends.split(",") if b] or list(models.DEFAULT_VARIANTS[args.device])
    for name in names:
        try:
            models.variant_options(name, args.device)
        except ValueError as exc:
            parser.error(str(exc))
    backends = [b for b in names if _installed(models.VARIANTS[b].backend)]
    started = time.time()
    results: dict[str, Any] = {
        "machine": machine.describe(),
        "device": args.device,
        "variants": {
            name: {
                "backend": models.VARIANTS[name].backend,
                "options": list(models.variant_options(name, args.device)[1]),
            }
            for name in backends
        },
        "label": args.label,
        "quick": args.quick,
        "duration_s": args.duration,
        "limits": [],
        "servers": [],
    }
    sample = models.SAMPLE
    work = servers.temp_dir()
    resnet_parts = parts & {
        "limits",
        "embedded",
        "exact",
        "giveway",
        "batchauto",
        "batch8",
        "azureml",
        "baseline",
    }
    for backend in backends:
        if not resnet_parts and not ("protocols" in parts and backend == "onnx"):
            continue  # nothing asked for needs this backend's ResNet50: do not build it
        _say(f"ResNet50, {backend} on {args.device}")
        model = models.resnet50(backend, args.device)
        if "limits" in parts:
            results["limits"] += in_process(model, sample, "1,8,32", seconds)
        if "embedded" in parts:
            results["servers"].append(
                under_load(
                    "embedded",
                    servers.embedded(model),
                    sample,
                    CONCURRENCY,
                    args,
                    f"{backend} embedded",
                    model,
                )
            )
        # batches of the size tuned under load (--preferred-batch-size auto), or fixed at 8,
        # against the default's batches filled to --max-batch-size ("embedded")
        if "batchauto" in parts:
            label = f"{backend} embedded, preferred batch size auto"
            results["servers"].append(tuned_under_load(model, sample, CONCURRENCY, args, label))
        if "batch8" in parts:
            results["servers"].append(
                under_load(
                    "embedded",
                    servers.embedded(model, "--preferred-batch-size", "8"),
                    sample,
                    CONCURRENCY,
                    args,
                    f"{backend} embedded, preferred batch size 8",
                    model,
                )
            )
        # --exact-decode: the same decoding work as the in-process "article" limit
        exact_variants = [("exact", "embedded exact", None)]
        if "giveway" in parts:
            exact_variants.append(("giveway", "embedded exact, decode not held back", NO_GIVE_WAY))
        for part, name, env in exact_variants:
            if part in parts:
                results["servers"].append(
                    under_load(
                        "embedded",
                        servers.embedded(model, "--exact-decode", env=env),
                        sample,
                        CONCURRENCY,
                        args,
                        f"{backend} {name}",
                        model,
                    )
                )
        if "azureml" in parts:
            package = servers.build_package(model, work / f"pkg-{backend}")
            results["servers"].append(
                under_load(
                    "azureml",
                    servers.package_azureml(package, model.device),
                    sample,
                    CONCURRENCY,
                    args,
                    f"{backend} azmlinfsrv",
                    model,
                )
            )
        # /score, V2 REST and V2 gRPC on one server: ResNet50 ONNX at c=32 (issue 9)
        if "protocols" in parts and backend == "onnx":
            results["servers"] += protocols.measure(
                model, sample, (32,), args.duration, args.warmup, "onnx protocols"
            )
        # the baseline is plain fp32 TensorFlow: measured once, next to the fp32 package
        if "baseline" in parts and backend == "tensorflow":
            results["servers"].append(
                under_load(
                    "baseline",
                    servers.baseline_azureml(model.path.parent),
                    sample,
                    CONCURRENCY,
                    args,
                    "article baseline",
                )
            )
    if "protocols" in parts and "tensorflow" in backends:
        tiny = replace(models.tiny_tensorflow(), device=args.device)
        results["servers"] += [
            dict(entry, model="tiny")
            for entry in protocols.measure(
                tiny, models.small_image(), (8,), args.duration, args.warmup, "tiny protocols"
            )
        ]
    if "tiny" in parts and "tensorflow" in backends:
        _say(f"tiny model, tensorflow on {args.device}")
        tiny = replace(models.tiny_tensorflow(), device=args.device)
        small = models.small_image()
        results["limits"] += [
            dict(r, model="tiny") for r in in_process(tiny, small, "1,8", seconds)
        ]
        results["servers"].append(
            dict(
                under_load(
                    "embedded", servers.embedded(tiny), small, (1, 8), args, "tiny embedded", tiny
                ),
                model="tiny",
            )
        )
        package = servers.build_package(tiny, work / "pkg-tiny")
        results["servers"].append(
            dict(
                under_load(
                    "azureml",
                    servers.package_azureml(package, tiny.device),
                    small,
                    (1, 8),
                    args,
                    "tiny azmlinfsrv",
                    tiny,
                ),
                model="tiny",
            )
        )
    if "decode" in parts:
        results["decode_scaling"] = decode_scaling(1.0 if args.quick else 4.0)
    results["elapsed_s"] = round(time.time() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suffix = ("-cuda" if args.device == "cuda" else "") + ("-quick" if args.quick else "")
    path = RESULTS / f"{stamp}{suffix}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    text = report.markdown(results)
    print(text)
    if not args.quick and not args.only:
        report.update_results_md(text, args.device)
    _say(f"wrote {path}")


if __name__ == "__main__":
    main()
