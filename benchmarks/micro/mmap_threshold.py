"""glibc's dynamic mmap threshold against a fixed one: resident memory, page faults, rate.

glibc raises its mmap threshold as large blocks are freed (up to 32 MiB), so request-sized
arrays come from its arenas, which keep what they grew to. ``MALLOC_MMAP_THRESHOLD_``
pins it: every larger block is mapped and unmapped each time (resident memory lower, a
page fault per page touched). For each arm (alternating, fresh servers), ``scorepack
serve`` is loaded with h2load on ``/score`` at ``-c`` after a warm-up, and the server's
minor faults and transparent huge page faults (``/proc/vmstat``, machine-wide) per
request, its resident memory and the rate are printed.

    .venv/bin/python -m benchmarks.micro.mmap_threshold --model resnet50-onnx
    .venv/bin/python -m benchmarks.micro.mmap_threshold --model resnet50-pytorch --requests 120
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.micro.protocols_native import Target, ensure_h2load, h2load
from benchmarks.suite import models, servers


def _thp_faults() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("thp_fault_alloc "):
            return int(line.split()[1])
    return 0


def _faults_and_rss(pid: int) -> tuple[int, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return int(fields[7]), pages * 4096 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        choices=("tiny", "resnet50-onnx", "resnet50-pytorch", "resnet50-tensorflow"),
        default="resnet50-onnx",
    )
    parser.add_argument("--threshold", type=int, default=1 << 20, help="bytes (default 1 MiB)")
    parser.add_argument("--requests", type=int, default=300, help="requests per arm and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    args = parser.parse_args()
    tool = ensure_h2load()
    if args.model == "tiny":
        model, image = models.tiny_tensorflow(), models.small_image()
    else:
        model, image = models.resnet50(args.model.split("-", 1)[1]), models.SAMPLE
    arms = {"dynamic": {}, "fixed": {"MALLOC_MMAP_THRESHOLD_": str(args.threshold)}}
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.bin"
        body.write_bytes(image.read_bytes())
        for _ in range(args.rounds):
            for arm, env in arms.items():
                port = servers.free_port()
                cmd = [
                    sys.executable, "-m", "scorepack", "serve", str(model.path),
                    *model.serve_args, "--port", str(port), "--no-access-log",
                ]  # fmt: skip
                url = f"http://127.0.0.1:{port}"
                log = Path(tmp) / f"{arm}.log"
                with servers.running(
                    cmd, ready_path="/health/ready", url=url, env=env, log=log
                ) as server:
                    target = Target(
                        "score", f"{url}/score", ("content-type: image/jpeg",), body, True
                    )
                    h2load(tool, target, args.concurrency, max(50, args.requests // 5), 600)
                    faults, rss = _faults_and_rss(server.proc.pid)
                    thp = _thp_faults()
                    run = h2load(tool, target, args.concurrency, args.requests, 600)
                    faults_after, rss_after = _faults_and_rss(server.proc.pid)
                    row = {
                        "arm": arm,
                        "minor_faults_per_request": round(
                            (faults_after - faults) / args.requests, 1
                        ),
                        "thp_faults_per_request": round((_thp_faults() - thp) / args.requests, 2),
                        "rss_mib": [round(rss), round(rss_after)],
                        "rps": round(run["rps"], 1),
                    }
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"settings": vars(args), "rounds": results}, indent=2))


if __name__ == "__main__":
    main()
