"""``python -m benchmarks.overload stalls|burst|soak`` — see each module's docstring."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.overload import ROOT


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload")
    sub = parser.add_subparsers(dest="command", required=True)
    stalls = sub.add_parser("stalls", help="probes and scoring with N stalled uploads held open")
    stalls.add_argument("--hosts", default="embedded,azureml,azureml-gthread")
    stalls.add_argument("--stalls", type=int, default=64)
    stalls.add_argument("--rounds", type=int, default=20)
    stalls.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    if args.command == "stalls":
        from benchmarks.overload import stalls as bench

        result = bench.run(args.hosts.split(","), args.stalls, args.rounds, args.timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-overload-{args.command}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
