"""Results as Markdown: the machine, the in-process limits, the servers, the targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import protocols

RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"
START, END = "<!-- generated:start -->", "<!-- generated:end -->"
#: each device's run has its own generated block, so a GPU run leaves the CPU results be
MARKERS = {
    "cpu": (START, END),
    "cuda": ("<!-- generated:cuda:start -->", "<!-- generated:cuda:end -->"),
}


def _limit(
    results: dict[str, Any], backend: str, decode: str, batch: int, model: str = "resnet50"
) -> dict[str, Any] | None:
    for row in results["limits"]:
        if (row["backend"], row["decode"], row["batch"], row.get("model", "resnet50")) == (
            backend,
            decode,
            batch,
            model,
        ):
            return dict(row)
    return None


def _server(results: dict[str, Any], label: str) -> dict[str, Any] | None:
    return next((s for s in results["servers"] if s["label"] == label), None)


def _run(server: dict[str, Any] | None, concurrency: int) -> dict[str, Any] | None:
    if server is None:
        return None
    return next((r for r in server["runs"] if r["concurrency"] == concurrency), None)


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, needed, verdict) for every target the results allow checking."""
    rows = []
    backends = sorted(
        {r["backend"] for r in results["limits"] if r.get("model", "resnet50") == "resnet50"}
    )
    for backend in backends:
        limit = _limit(results, backend, "article", 32)
        run = _run(_server(results, f"{backend} embedded"), 32)
        if limit and run:
            ratio = run["rps"] / limit["images_per_s"]
            rows.append(
                (
                    f"ResNet50 {backend}: embedded c=32 / in-process limit "
                    "(article decode, batch 32)",
                    f"{run['rps']:.1f} / {limit['images_per_s']:.1f} = **{ratio:.2f}**",
                    "≥ 1.05",
                    "pass" if ratio >= 1.05 else "FAIL",
                )
            )
    base = _run(_server(results, "article baseline"), 32)
    for variant in ("tensorflow", "tensorflow-bf16"):
        pkg = _run(_server(results, f"{variant} azmlinfsrv"), 32)
        if pkg and base and base["rps"]:
            ratio = pkg["rps"] / base["rps"]
            rows.append(
                (
                    f"ResNet50 {variant}: package under azmlinfsrv / article baseline (fp32), c=32",
                    f"{pkg['rps']:.1f} / {base['rps']:.1f} = **{ratio:.2f}**",
                    "≥ 1.8",
                    "pass" if ratio >= 1.8 else "FAIL",
                )
            )
    for backend in backends:
        limit = _limit(results, backend, "scorepack", 1)
        run = _run(_server(results, f"{backend} embedded"), 1)
        if limit and run and run["latency_ms"]:
            p50, alone = run["latency_ms"]["p50"], limit["batch_latency_ms"]
            rows.append(
                (
                    f"ResNet50 {backend}: embedded c=1 p50 vs in-process batch-1 latency",
                    f"{p50:.1f} ms vs {alone:.1f} ms ({p50 - alone:+.1f} ms)",
                    "≤ +2 ms",  # issue 13 (the first issue's +3 ms, tightened)
                    "pass" if p50 <= alone + 2 else "FAIL",
                )
            )
    rows += _issue13_targets(results, backends)
    limit = _limit(results, "tensorflow", "scorepack", 1, "tiny")
    run = _run(_server(results, "tiny embedded"), 8)
    if limit and run:
        ratio = run["rps"] / limit["images_per_s"]
        rows.append(
            (
                "Tiny model: embedded c=8 / in-process decode+preprocess+model rate",
                f"{run['rps']:.0f} / {limit['images_per_s']:.0f} = **{ratio:.2f}**",
                "≥ 0.8",
                "pass" if ratio >= 0.8 else "FAIL",
            )
        )
    return rows + protocols.targets(results)


def _issue13_targets(results: dict[str, Any], backends: list[str]) -> list[tuple[str, ...]]:
    """Issue 13: exact and default decode against the article-style limit, no loss as
    concurrency rises, and decode scaling with workers."""
    rows: list[tuple[str, ...]] = []
    for backend in backends:
        limit = _limit(results, backend, "article", 32)
        for suffix, decode, needed in (
            ("embedded exact", "exact", 1.05),
            ("embedded", "default", 1.15),
        ):
            run = _run(_server(results, f"{backend} {suffix}"), 32)
            if not (limit and run):
                continue
            ratio = run["rps"] / limit["images_per_s"]
            rows.append(
                (
                    f"ResNet50 {backend}, {decode} decode: embedded c=32 / in-process limit "
                    "(article decode, best of batch 32)",
                    f"{run['rps']:.1f} / {limit['images_per_s']:.1f} = **{ratio:.2f}**",
                    f"≥ {needed:.2f}",
                    "pass" if ratio >= needed else "FAIL",
                )
            )
        embedded = _run(_server(results, f"{backend} embedded"), 32)
        package = _run(_server(results, f"{backend} azmlinfsrv"), 32)
        if embedded and package and embedded["rps"]:
            ratio = package["rps"] / embedded["rps"]
            sizes = [
                (_server(results, f"{backend} {host}") or {}).get("preferred_batch_size")
                for host in ("azmlinfsrv", "embedded")
            ]
            rows.append(
                (
                    f"ResNet50 {backend}: package under azmlinfsrv / embedded, c=32 "
                    f"(preferred batch size {sizes[0] or '?'} / {sizes[1] or '?'})",
                    f"{package['rps']:.1f} / {embedded['rps']:.1f} = **{ratio:.2f}**",
                    "≥ 0.95",
                    "pass" if ratio >= 0.95 else "FAIL",
                )
            )
        for suffix in ("embedded", "embedded exact"):
            server = _server(results, f"{backend} {suffix}")
            one = _run(server, 1)
            if not one or not one["rps"]:
                continue
            worst = min(
                (r for r in (_run(server, 8), _run(server, 32)) if r), key=lambda r: r["rps"]
            )
            ratio = worst["rps"] / one["rps"]
            rows.append(
                (
                    f"ResNet50 {backend} {suffix}: slowest of c=8, c=32 / c=1",
                    f"c={worst['concurrency']} {worst['rps']:.1f} / {one['rps']:.1f} "
                    f"= **{ratio:.2f}**",
                    "≥ 1.00",
                    "pass" if ratio >= 1.0 else "FAIL",
                )
            )
    scaling = results.get("decode_scaling")
    if scaling:
        for decode in ("reduced", "exact"):
            ratios = [
                r["threads_scaling"]
                for r in scaling["rows"]
                if r["decode"] == decode and r["workers"] > 1
            ]
            if ratios:
                worst_ratio = min(ratios)
                rows.append(
                    (
                        f"Decode scaling ({decode} decode, threads): worst N / (N × 1), "
                        f"N up to {scaling['cores']}",
                        f"**{worst_ratio:.2f}**",
                        "≥ 0.80",
                        "pass" if worst_ratio >= 0.8 else "FAIL",
                    )
                )
    return rows


def _scaling_table(results: dict[str, Any]) -> list[str]:
    scaling = results.get("decode_scaling")
    if not scaling:
        return []
    kinds = [k for k in ("threads", "processes") if k in scaling["rows"][0]]
    headers = ["decode", "workers"]
    for kind in kinds:
        headers += [f"{kind} img/s", f"{kind} N / (N × 1)"]
    body = []
    for r in scaling["rows"]:
        cells = [r["decode"], str(r["workers"])]
        for kind in kinds:
            ratio = r[f"{kind}_scaling"]
            cells += [f"{r[kind]:.1f}", "" if ratio is None else f"{ratio:.2f}"]
        body.append(cells)
    return [
        "",
        f"### Decode scaling (decode only, 640x480 JPEG → 224x224 float, "
        f"{scaling['cores']} usable cores)",
        "",
        _table(headers, body),
    ]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _levers(results: dict[str, Any]) -> list[list[str]]:
    """One row per variant measured: its backend and the -O options that were on."""
    return [
        [name, v["backend"], ", ".join(f"`-O {o}`" for o in v["options"]) or "none (defaults)"]
        for name, v in results.get("variants", {}).items()
    ]


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    device = results.get("device", "cpu")
    parts = [
        f"Run of {results.get('label') or 'the suite'}"
        f"{' (quick)' if results.get('quick') else ''}, {results.get('elapsed_s', '?')} s in all, "
        f"{results['duration_s']:g} s per load level.",
        "",
        _table(
            ["machine", ""],
            [
                ["CPU", f"{m['cpu']} ({m['cores']} cores)"],
                ["memory", f"{m['memory_gib']} GiB"],
                ["GPU", ", ".join(m["gpus"]) or "none"],
                ["models ran on", device],
                ["Python", m["python"]],
                ["packages", ", ".join(f"{k} {v}" for k, v in m["versions"].items())],
            ],
        ),
        "",
        "### Variants (which levers were on)",
        "",
        _table(["variant", "backend", "options"], _levers(results)),
        "",
        "### Targets",
        "",
        _table(["target", "measured", "needed", ""], [list(t) for t in targets(results)]),
        "",
        "### In-process limits (decode + preprocess + model, no HTTP, one image after another)",
        "",
        _table(
            ["model", "backend", "decode", "batch", "images/s", "ms per batch"],
            [
                [
                    r.get("model", "resnet50"),
                    r["backend"],
                    r["decode"]
                    + (" (by the backend)" if r.get("image_decode") == "backend" else ""),
                    str(r["batch"]),
                    f"{r['images_per_s']:.1f}",
                    f"{r['batch_latency_ms']:.1f}",
                ]
                for r in results["limits"]
            ],
        ),
        "",
        "### Servers (client: `scorepack bench`, a separate process on the same machine)",
        "",
        _table(
            [
                "server",
                "c",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "batch sizes",
                "preferred batch",
                "ready s",
                "peak RSS MiB",
            ],
            [
                [
                    s["label"],
                    str(r["concurrency"]),
                    f"{r['rps']:.1f}",
                    f"{r['latency_ms'].get('p50', 0):.1f}",
                    f"{r['latency_ms'].get('p99', 0):.1f}",
                    str(r["errors"]),
                    _sizes(r.get("batch_sizes", {})),
                    # a run's own size where it has one (batchauto: a server per level)
                    str(r.get("preferred_batch_size") or s.get("preferred_batch_size") or "-"),
                    str(s["ready_s"]),
                    str(s["peak_rss_mib"]),
                ]
                for s in results["servers"]
                for r in s["runs"]
            ],
        ),
        *_scaling_table(results),
    ]
    return "\n".join(parts) + "\n"


def _sizes(sizes: dict[str, int]) -> str:
    if not sizes:
        return "-"
    total = sum(sizes.values())
    mean = sum(int(k) * v for k, v in sizes.items()) / total
    return f"mean {mean:.1f}, max {max(int(k) for k in sizes)}"


def update_results_md(generated: str, device: str = "cpu", path: Path = RESULTS_MD) -> None:
    """Replace the device's generated block of RESULTS.md, keeping everything else."""
    start, end = MARKERS[device]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if start not in text:
        text = f"{text.rstrip()}\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{generated}{end}{tail}")
