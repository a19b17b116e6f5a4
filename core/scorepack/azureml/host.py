"""``scorepack serve-azureml PKG``: the package under azmlinfsrv, laid out as on Azure.

The package directory is the app root (``AML_APP_ROOT``, the working directory, the home
of ``score.py``); the model is laid out under a temporary ``azureml-models/NAME/1/model``
and ``AZUREML_MODEL_DIR`` points there; azmlinfsrv gets the environment the deployment
files give it (one worker, gunicorn threads). It runs in a child process: this
environment's Python after checking its versions, or an isolated one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from ..errors import PackageError
from ..generator.spec import PackageSpec
from ..manifest import load_manifest, verify_model
from . import launch
from .envcheck import check_environment
from .isolated import isolated_python
from .layout import make_model_dir
from .settings import server_environment

__all__ = ["AzureMLServe", "free_port", "serve_azureml"]


def free_port(host: str) -> int:
    """A port nothing listens on now (azmlinfsrv cannot be handed a bound socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class AzureMLServe:
    """How to serve one package under azmlinfsrv."""

    package: Path
    host: str = "127.0.0.1"
    port: int = 5001
    #: the device to load the model on (default: the package's)
    device: str | None = None
    #: gunicorn threads (default: the package's deployment settings)
    threads: int | None = None
    isolated: bool = False
    check_env: bool = True
    #: the Prometheus metrics port (SCOREPACK_METRICS_PORT; default: a free one on ``host``)
    metrics_port: int | None = None
    #: origins browsers may call from (azmlinfsrv's AML_CORS_ORIGINS); none: CORS off
    cors_origins: tuple[str, ...] = ()
    #: extra variables for the server (``SCOREPACK_*`` overrides, say)
    environ: Mapping[str, str] = field(default_factory=dict)


def _cpu_serving(spec: PackageSpec, device: str | None) -> bool:
    return spec.device == "cuda" and (device or spec.device).startswith("cpu")


def _nvidia_driver() -> bool:
    """An NVIDIA driver is loaded (checked without importing any framework)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def _python(options: AzureMLServe, spec: PackageSpec, say: Callable[[str], None]) -> str:
    if options.isolated:
        if spec.device == "cuda" and (_cpu_serving(spec, options.device) or not _nvidia_driver()):
            raise PackageError(
                "This is a CUDA package: an isolated environment would install its CUDA "
                "packages (gigabytes), and this machine would run it on the CPU. Serve it "
                "--isolated on a GPU machine, or build a CPU package to try it here "
                "(scorepack build --device cpu)."
            )
        return str(isolated_python(spec, options.package, progress=say))
    if options.check_env:
        problems = check_environment(
            spec, options.package, cpu_serving=_cpu_serving(spec, options.device)
        )
        if problems:
            listing = "\n".join(f"  {p}" for p in problems)
            if spec.device == "cuda" and not _cpu_serving(spec, options.device):
                listing += "\n(A CUDA package: on a machine without a GPU, add --device cpu.)"
            raise PackageError(
                "This environment does not have what the package pins:\n"
                f"{listing}\nServe it with --isolated (a fresh environment made from the "
                "package), install its requirements.txt, or pass --no-env-check."
            )
    return sys.executable


def server_command(python: str, options: AzureMLServe) -> list[str]:
    """The launcher's command line (argument list, never a shell string)."""
    return launch.command(python, options.package / "score.py", options.port, host=options.host)


def server_env(spec: PackageSpec, options: AzureMLServe, model_dir: Path) -> dict[str, str]:
    """The child's environment: this one, plus what Azure ML and the deployment set."""
    env = dict(os.environ)
    if options.isolated:
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)
        env["PYTHONNOUSERSITE"] = "1"
    deployment = spec.deployment
    if options.threads is not None:
        deployment = replace(deployment, threads=options.threads)
    env.update(server_environment(deployment))
    env.update(
        {
            "AML_APP_ROOT": str(options.package),
            "AZUREML_MODEL_DIR": str(model_dir),
            "SERVICE_NAME": spec.name,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("AZUREML_ENTRY_SCRIPT", None)
    # metrics on this machine: beside the server, on its address, never a fixed port that
    # a second local server would fight over
    port = options.metrics_port if options.metrics_port is not None else free_port(options.host)
    env["SCOREPACK_METRICS_PORT"] = str(port)
    env["SCOREPACK_METRICS_ADDR"] = options.host
    if options.cors_origins:
        env["AML_CORS_ORIGINS"] = ",".join(options.cors_origins)
    else:
        env.pop("AML_CORS_ORIGINS", None)
    env.pop("SCOREPACK_MODEL_DIR", None)  # the model must come from where Azure puts it
    if options.device:
        env["SCOREPACK_DEVICE"] = options.device
    env.update(options.environ)
    return env


def serve_azureml(
    options: AzureMLServe,
    *,
    say: Callable[[str], None] = print,
    on_start: Callable[[str], None] | None = None,
) -> int:
    """Run the package under azmlinfsrv until it exits or this process is signalled.

    Checks the package (manifest, model hashes) and the environment first, so that their
    errors come from here rather than from a server log. Returns azmlinfsrv's exit status.
    """
    package = options.package.resolve()
    options = replace(options, package=package)
    spec = load_manifest(package)
    verify_model(spec, package / "model")
    if not (package / "score.py").is_file():
        raise PackageError(f"{package / 'score.py'} is missing; rebuild the package.")
    python = _python(options, spec, say)
    with tempfile.TemporaryDirectory(prefix="scorepack-azureml-") as root:
        model_dir = make_model_dir(spec, package, Path(root))
        env = server_env(spec, options, model_dir)
        if env.get("SCOREPACK_METRICS_PORT", "0") not in ("", "0"):
            host = f"[{options.host}]" if ":" in options.host else options.host
            say(f"metrics at http://{host}:{env['SCOREPACK_METRICS_PORT']}/metrics")
        proc = subprocess.Popen(server_command(python, options), cwd=package, env=env)
        if on_start is not None:
            on_start(f"http://{options.host}:{options.port}")
        return _wait(proc)


def _wait(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the server, passing SIGTERM/SIGINT on (gunicorn then stops gracefully)."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for sig in previous:
            signal.signal(sig, forward)
    except ValueError:  # not the main thread: signals stay as they are
        previous = {}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
