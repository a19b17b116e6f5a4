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
    burst = sub.add_parser("burst", help="open-loop burst at N x capacity; probes watched")
    burst.add_argument("--host", default="embedded", choices=("embedded", "azureml"))
    burst.add_argument("--factor", type=float, default=5.0)
    burst.add_argument("--seconds", type=float, default=10.0)
    burst.add_argument("--concurrency", type=int, default=8)
    soak = sub.add_parser("soak", help="steady load; RSS and open fds every 10 s")
    soak.add_argument("--host", default="embedded", choices=("embedded", "azureml"))
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--load", type=float, default=0.5, help="fraction of capacity")
    soak.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    if args.command == "stalls":
        from benchmarks.overload import stalls as bench

        result = bench.run(args.hosts.split(","), args.stalls, args.rounds, args.timeout)
    elif args.command == "burst":
        from benchmarks.overload import load

        result = load.burst(args.host, args.factor, args.seconds, args.concurrency)
        print(load.summary(result))
    else:
        from benchmarks.overload import load

        result = load.soak(args.host, args.minutes, args.load, args.concurrency)
        print(load.markdown(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-overload-{args.command}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
