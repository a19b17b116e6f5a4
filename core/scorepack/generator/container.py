"""The container build context of a package: an image of scorepack's own server.

``render_container(spec)`` gives the package root a ``Dockerfile`` and ``.dockerignore`` and
``deploy/container/install.sh`` (the image's install step, a script so that a test can run
the very same step into a fresh virtual environment). The image runs
``scorepack serve`` on 0.0.0.0, HTTP on :data:`HTTP_PORT` and gRPC on :data:`GRPC_PORT`,
as a non-root user, with the model read from :data:`MODEL_DIR` — where KServe's storage
initializer puts it, where the Kubernetes and Azure ML custom-container deployments mount
it, and where the default image carries its own copy.

Pure: the same spec always gives the same text (golden-file tested).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from importlib import resources
from string import Template

from ..cuda import service_variables
from ..manifest import LABELS_FILE, MANIFEST_FILE
from .spec import PackageSpec

__all__ = [
    "APP_DIR",
    "DOCKERFILE",
    "DOCKERIGNORE",
    "ENTRYPOINT",
    "GRPC_PORT",
    "HTTP_PORT",
    "INSTALL_SCRIPT",
    "LIVE_PATH",
    "MODEL_DIR",
    "READY_PATH",
    "USER_ID",
    "VENV_DIR",
    "base_image",
    "dockerfile",
    "healthcheck_command",
    "render_container",
    "startup_budget_s",
]

DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
INSTALL_SCRIPT = "deploy/container/install.sh"

#: KServe requires the HTTP port to be 8080; 8081 is its conventional gRPC port
HTTP_PORT = 8080
GRPC_PORT = 8081
APP_DIR = "/opt/scorepack/package"
VENV_DIR = "/opt/scorepack/venv"
#: KServe's model mount point; the other deployments use it too, so one image fits all
MODEL_DIR = "/mnt/models"
USER_ID = 10001
#: the Open Inference Protocol (V2) health routes the probes use
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
ENTRYPOINT: tuple[str, ...] = ("scorepack", "serve", APP_DIR)


def base_image(spec: PackageSpec) -> str:
    """The image's base: the Python the package was built for, on Debian slim.

    Every built-in backend's GPU build brings its CUDA user-space libraries as wheels
    (``torch`` CUDA builds, ``tensorflow[and-cuda]``, ``onnxruntime-gpu[cuda,cudnn]``), so the
    image needs no CUDA base: only the node's driver, which the NVIDIA container runtime
    mounts in. The Dockerfile takes it as ``--build-arg BASE_IMAGE=...`` to switch.
    """
    return f"python:{spec.python_version}-slim-bookworm"


def startup_budget_s(spec: PackageSpec) -> int:
    """Seconds a replica may take from start to ready: four times the model's measured load
    time plus a minute (the GPU, warm-up of every batch size and a cold page cache all
    take longer than the build's CPU load), and never under two minutes."""
    measured = spec.load_seconds or 0.0
    return max(120, math.ceil(4 * measured + 60))


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command: Python (slim images have no curl) asks the ready route."""
    code = (
        "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + "
        f"os.environ.get('SCOREPACK_PORT', '{HTTP_PORT}') + '{READY_PATH}', timeout=4)"
    )
    return ["python", "-c", code]


def _template(name: str) -> Template:
    text = resources.files("scorepack.generator").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def _quote(tokens: Sequence[str]) -> str:
    return " ".join(shlex.quote(t) for t in tokens)


def _install_lines(spec: PackageSpec) -> str:
    from .rendering import _name

    lines = []
    torch = [line for line in spec.requirements.pip if _name(line) == "torch"]
    if torch:
        # a bare torch resolution pulls gigabytes of CUDA wheels: the pinned one goes first,
        # with the index options it needs
        options = [
            token
            for line in spec.requirements.pip
            if line.strip().startswith("--")
            for token in line.split()
        ]
        lines.append("pip_install " + _quote([*options, *torch]))
    lines.append("pip_install -r requirements.txt")
    return "\n".join(lines)


def dockerfile(spec: PackageSpec, *, with_model: bool = True) -> str:
    """The Dockerfile; ``with_model`` adds the default stage that carries the model."""
    package_files = [MANIFEST_FILE]
    if spec.config.postprocess.labels is not None:
        package_files.append(LABELS_FILE)
    gpu = spec.device == "cuda"
    model_stage = (
        "\n# the default image carries the model where the pods mount it; "
        "`--target server` leaves it out\nFROM server\n"
        f"COPY model/ {MODEL_DIR}/\n"
        if with_model
        else ""
    )
    build_hint = (
        "                   # with the model in it\n"
        "#   docker build --target server -t IMAGE .   # without: KServe and Azure ML mount it"
        if with_model
        else "   # without the model: Azure ML mounts it"
    )
    return (
        _template("Dockerfile.tmpl")
        .substitute(
            name_literal=repr(spec.name),
            scorepack_version=spec.scorepack_version or "unknown",
            http_port=HTTP_PORT,
            grpc_port=GRPC_PORT,
            build_hint=build_hint,
            driver_note=" (see the package README for the version)" if gpu else "",
            base_image=base_image(spec),
            service_env=(
                (
                    " \\\n    NVIDIA_VISIBLE_DEVICES=all"
                    " \\\n    NVIDIA_DRIVER_CAPABILITIES=compute,utility"
                    if gpu
                    else ""
                )
                # glibc's huge pages (hugepages.py), and the CUDA environment's own
                # (TensorFlow: a PTX JIT cache that fits)
                + "".join(
                    f" \\\n    {k}={v}"
                    for k, v in service_variables(spec.requirements.cuda).items()
                )
            ),
            uid=USER_ID,
            app_dir=APP_DIR,
            venv=VENV_DIR,
            package_files=" ".join(package_files),
            model_dir=MODEL_DIR,
            start_period=startup_budget_s(spec),
            healthcheck=json.dumps(healthcheck_command()),
            entrypoint=json.dumps(list(ENTRYPOINT)),
            model_stage=model_stage,
        )
        .rstrip("\n")
        + "\n"
    )


def render_container(spec: PackageSpec) -> dict[str, str]:
    """The build context's files: Dockerfile, .dockerignore and the install script."""
    return {
        DOCKERFILE: dockerfile(spec),
        DOCKERIGNORE: _template("dockerignore.tmpl").substitute(),
        INSTALL_SCRIPT: _template("install.sh.tmpl").substitute(
            name_literal=repr(spec.name),
            python_version=spec.python_version,
            install_lines=_install_lines(spec),
        ),
    }
