"""The README's first command: build ResNet50 here, serve it, score the sample image.

Everything is local: the model has random weights (no download), the server listens on
127.0.0.1 and is stopped at the end. Each step prints the command a user would type.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / ".cache" / "demo" / "resnet50"
IMAGE = ROOT / "examples" / "images" / "sample.jpg"
SCOREPACK = [sys.executable, "-m", "scorepack"]


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def show(cmd: list[str]) -> None:
    shown = ["scorepack", *cmd[len(SCOREPACK) :]] if cmd[: len(SCOREPACK)] == SCOREPACK else cmd
    print("$ " + shlex.join(str(c) for c in shown), flush=True)


def build_model() -> None:
    if (MODEL / "saved_model.pb").exists():
        print(f"{MODEL} exists; reusing it (delete it to rebuild)")
        return
    print(
        "building tf.keras.applications.ResNet50(weights=None) — random weights, nothing downloaded"
    )
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.applications.ResNet50(weights=None)
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    model.export(str(MODEL), verbose=False)
    print(f"saved {MODEL}")


def serve() -> tuple[subprocess.Popen[str], str]:
    cmd = [*SCOREPACK, "serve", str(MODEL), "--port", "0", "--preset", "caffe"]
    show(cmd)
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        sys.stderr.write("   | " + line)
        found = re.search(r"at (http://\S+)/score", line)
        if found:
            # keep echoing the server's log, so its pipe never fills up and blocks it
            threading.Thread(target=_echo, args=(proc.stderr,), daemon=True).start()
            return proc, found.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the server did not start; see its output above")


def _echo(stream: object) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sys.stderr.write("   | " + line)


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the model did not become ready in 5 minutes")


def main() -> int:
    step("1. Build a ResNet50 SavedModel locally")
    build_model()
    step("2. Inspect it")
    cmd = [*SCOREPACK, "inspect", str(MODEL), "--preset", "caffe"]
    show(cmd)
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    step("3. Serve it (embedded server, dynamic batching)")
    proc, url = serve()
    try:
        wait_ready(url, proc)
        print(f"ready: {url}/health/ready answers 200")
        step("4. Score the sample image")
        cmd = [*SCOREPACK, "score", f"{url}/score", str(IMAGE)]
        show(cmd)
        subprocess.run(cmd, check=True)
    finally:
        step("5. Stop the server (SIGTERM: in-flight requests finish first)")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("\ndone.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
