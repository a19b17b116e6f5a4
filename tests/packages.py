"""Scoring packages for the package and azmlinfsrv tests: tiny models in every installed
backend's format, packages built from them (once per session), and azmlinfsrv started on
a package through ``scorepack serve-azureml PKG`` on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from scorepack.azureml import launch
from scorepack.generator import build_package

REPO = Path(__file__).resolve().parent.parent

#: the backends scorepack ships, in the order a test prefers them when one will do
BACKENDS = ("onnx", "tensorflow", "pytorch")

_FRAMEWORK = {"tensorflow": "tensorflow", "onnx": "onnxruntime", "pytorch": "torch"}


def _tf_model(path: Path) -> Path:
    from tf_models import small_cnn

    return small_cnn(path)


def _onnx_model(path: Path) -> Path:
    """image [N, 3, 8, 8] float32 → mean per channel → dense → softmax → probs [N, 4]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    weights = numpy_helper.from_array((rng.normal(size=(3, 4)) * 0.05).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = path.with_suffix(".onnx")
    onnx.save(model, str(path))
    return path


def _torch_model(path: Path) -> Path:
    from parity_models import to_torchscript, torch_cnn

    return to_torchscript(torch_cnn(), path.with_suffix(".ts"))


#: backend → (module to import first, builder of a tiny image classifier)
MODELS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "tensorflow": ("tensorflow", _tf_model),
    "onnx": ("onnx", _onnx_model),
    "pytorch": ("torch", _torch_model),
}


def installed(backend: str) -> bool:
    """The backend's plugin and framework are installed here."""
    from scorepack import plugins

    spec = plugins.get_backends().get(backend)
    return spec is not None and spec.framework_version() is not None


def backend_params(names: Sequence[str] = BACKENDS) -> list[Any]:
    """pytest params, one per backend; a backend that is not installed is skipped."""
    import importlib.util

    params = []
    for name in names:
        module = MODELS[name][0]
        missing = (
            importlib.util.find_spec(module) is None
            or importlib.util.find_spec(f"scorepack_{name}") is None
        )
        marks = [pytest.mark.skip(reason=f"the {name} backend is not installed")] if missing else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


_lock = threading.Lock()
_models: dict[str, Path] = {}
_packages: dict[tuple[Any, ...], Path] = {}


def tiny_model(backend: str, root: Path) -> Path:
    """A tiny image classifier in ``backend``'s format, built once per session."""
    with _lock:
        if backend not in _models:
            folder = root / f"model-{backend}"
            folder.mkdir(parents=True, exist_ok=True)
            _models[backend] = MODELS[backend][1](folder / "tiny")
        return _models[backend]


def package_for(backend: str, root: Path, **options: Any) -> Path:
    """A CPU package of the backend's tiny model, built once per session per options."""
    key = (backend, tuple(sorted(options.items())))
    model = tiny_model(backend, root)
    with _lock:
        if key not in _packages:
            out = root / f"pkg-{backend}-{len(_packages)}"
            options.setdefault("device", "cpu")
            options.setdefault("targets", {})
            _packages[key] = build_package(model, out, **options).path
        return _packages[key]


def child_env(**extra: str) -> dict[str, str]:
    """This environment without SCOREPACK_* settings or PYTHONPATH, quiet frameworks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREPACK_")}
    env.pop("PYTHONPATH", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    from scorepack.azureml.host import free_port as pick

    return pick("127.0.0.1")


class AzmlinfsrvServer:
    """``scorepack serve-azureml PKG`` in a subprocess on 127.0.0.1 (or azmlinfsrv over
    ``entry_script``, through scorepack's launcher).

    Its output goes to a log file (read by :attr:`log`); :meth:`stop` sends SIGTERM (the
    CLI passes it to gunicorn, which stops gracefully) and kills what is left after a while.
    """

    #: the command before PKG (a subclass may use the old ``serve ... --runtime azureml``)
    command: tuple[str, ...] = ("serve-azureml",)

    def __init__(
        self,
        package: Path,
        *args: str,
        log: Path,
        env: dict[str, str] | None = None,
        entry_script: Path | None = None,
    ) -> None:
        self.package = package
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")
        if entry_script is None:
            command = [
                sys.executable,
                "-m",
                "scorepack",
                *self.command,
                str(package),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *args,
            ]
        else:
            # azmlinfsrv itself over a test's own entry script (``env`` must carry the
            # server's variables, as server_environment() gives them)
            command = launch.command(sys.executable, entry_script, self.port, *args)
        self.proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or child_env(),
            cwd=REPO,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def wait_up(self, timeout: float = 120.0) -> AzmlinfsrvServer:
        """Wait until azmlinfsrv's liveness route answers (init() has run by then)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"azmlinfsrv exited ({self.proc.returncode}):\n{self.log[-5000:]}"
                    )
                try:
                    if client.get(self.url + "/").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"azmlinfsrv did not come up in {timeout} s:\n{self.log[-5000:]}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> AzmlinfsrvServer:
        return self.wait_up()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sample_spec(**changes: Any) -> Any:
    """A fixed PackageSpec (no framework, no installed versions): a CPU TensorFlow image
    classifier with labels, as ``scorepack build`` would resolve it."""
    from dataclasses import replace

    from scorepack.backend import Requirements
    from scorepack.batching import BatchingConfig
    from scorepack.config import ScoringConfig
    from scorepack.generator.spec import DeploymentSettings, PackageSpec
    from scorepack.postprocess import PostprocessConfig
    from scorepack.preprocess import PreprocessConfig
    from scorepack.signature import Signature, TensorSpec

    spec = PackageSpec(
        name="flowers",
        backend="tensorflow",
        backend_distribution="scorepack-tensorflow",
        model_files=(
            "saved_model.pb",
            "variables/variables.data-00000-of-00001",
            "variables/variables.index",
        ),
        model_entry=".",
        signature=Signature(
            inputs=(TensorSpec("image", "float32", (None, 224, 224, 3)),),
            outputs=(TensorSpec("probs", "float32", (None, 5)),),
        ),
        config=ScoringConfig(
            preprocess=PreprocessConfig(preset="imagenet", resize="crop"),
            postprocess=PostprocessConfig(
                top_k=3, labels=("daisy", "dandelion", "rose", "sunflower", "tulip")
            ),
            batching=BatchingConfig(max_batch_size=16, max_delay_ms=4.0),
        ),
        device="cpu",
        requirements=Requirements(
            pip=("tensorflow-cpu==2.21.0",),
            base_image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
        ),
        framework="tensorflow",
        framework_version="2.21.0",
        backend_options={"signature": "serving_default"},
        scorepack_version="0.1.0",
        backend_version="0.1.0",
        python_version="3.11",
        wheels=(
            "wheels/scorepack-0.1.0-py3-none-any.whl",
            "wheels/scorepack_tensorflow-0.1.0-py3-none-any.whl",
        ),
        deployment=DeploymentSettings(gpu_cores=0, threads=16),
        file_hashes={
            "model/saved_model.pb": "1" * 64,
            "model/variables/variables.data-00000-of-00001": "2" * 64,
            "model/variables/variables.index": "3" * 64,
            "wheels/scorepack-0.1.0-py3-none-any.whl": "4" * 64,
            "wheels/scorepack_tensorflow-0.1.0-py3-none-any.whl": "5" * 64,
        },
        backend_module="scorepack_tensorflow",
        runtime_requirements=(
            "azureml-contrib-services==1.62.0",
            "azureml-inference-server-http==1.5.1",
            "gunicorn==27.0.1",
            "numpy==2.4.6",
            "uvloop==0.23.0; sys_platform != 'win32'",
        ),
    )
    return replace(spec, **changes)
