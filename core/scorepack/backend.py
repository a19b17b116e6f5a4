"""The backend contract: what a framework plugin supplies to scorepack.

A plugin registers a :class:`BackendSpec` from its ``register_backends`` hook. The spec
holds cheap, static facts (name, formats, how to detect them, what to install) and the
:class:`Backend` subclass that does the work. Nothing here imports a framework; a backend
imports its framework inside :meth:`Backend.load`.
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from .device import Device
from .errors import (
    DeviceUnavailableError,
    FrameworkMissingError,
    InvalidTensorError,
    PredictError,
    ScorepackError,
)
from .signature import Signature

if TYPE_CHECKING:
    import numpy as np

    from .preprocess import ImagePlan

__all__ = [
    "Backend",
    "BackendSpec",
    "Requirements",
    "import_framework",
    "map_errors",
]

Arrays = dict[str, "np.ndarray"]


@dataclass(frozen=True)
class Requirements:
    """What a scoring package must install to run a backend on one kind of device.

    ``pip`` and ``conda`` hold pinned requirement strings; ``base_image`` names the
    container image Azure ML should build on (a CUDA image for GPU packages).
    """

    pip: tuple[str, ...] = ()
    conda: tuple[str, ...] = ()
    channels: tuple[str, ...] = ("conda-forge",)
    base_image: str | None = None


class Backend(abc.ABC):
    """One model, loaded once, scored in batches, unloaded at the end.

    The lifecycle follows MLServer's ``MLModel`` and Triton's ``TritonPythonModel``:

    * ``__init__`` is cheap and imports nothing heavy;
    * :meth:`load` (override) imports the framework, loads the model onto a device and
      sets :attr:`signature` and :attr:`device`;
    * :meth:`predict` (override) takes one batch of named arrays and returns named
      arrays with **exactly one result row per input row**; the core checks this;
    * :meth:`unload` (override if needed) frees the model.

    All calls after ``__init__`` come from one thread, which owns the model (and its GPU).
    """

    #: options this backend accepts (``-O key=value``), name → help text. Override.
    options_help: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        path: str | Path,
        *,
        device: Device | str = "auto",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.requested_device = Device.parse(device)
        self.options: dict[str, Any] = dict(options or {})
        unknown = sorted(set(self.options) - set(self.options_help))
        if unknown:
            valid = ", ".join(sorted(self.options_help)) or "none"
            raise ValueError(
                f"unknown option(s) for {type(self).__name__}: {', '.join(unknown)}; "
                f"valid options: {valid}"
            )
        #: the device actually in use, set by load()
        self.device: Device = Device("cpu")
        self._signature: Signature | None = None

    @property
    def signature(self) -> Signature:
        """The model's inputs and outputs; valid after :meth:`load`."""
        if self._signature is None:
            raise RuntimeError(f"{type(self).__name__}.load() has not run")
        return self._signature

    @signature.setter
    def signature(self, value: Signature) -> None:
        self._signature = value

    @abc.abstractmethod
    def load(self) -> None:
        """Import the framework, load the model, set ``signature`` and ``device``.

        Override this. Raise :class:`~scorepack.errors.FrameworkMissingError` (see
        :func:`import_framework`) when the framework is absent and
        :class:`~scorepack.errors.ModelLoadError` when the model cannot be loaded.
        """

    @abc.abstractmethod
    def predict(self, inputs: Arrays) -> Arrays:
        """Score one batch. Override this.

        ``inputs`` maps every input name to an array whose first dimension is the batch.
        Return a mapping from output name to an array with the same first dimension:
        exactly one result row per input row. Translate framework exceptions with
        :func:`map_errors`.
        """

    def unload(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Free the model. Override when the framework holds resources."""

    def accepts_encoded_images(self, plan: ImagePlan) -> bool:
        """Whether :meth:`predict` takes JPEG bytes, undecoded, for the image input.

        Override to say yes when the backend decodes and preprocesses JPEGs itself (on a
        GPU with nvJPEG, say); the default is False. The Scorer asks once, after
        :meth:`load`, with the image plan it resolved (size, resize mode, colour order,
        scale/mean/std, layout, dtype); a backend that says yes keeps ``plan`` and must
        apply it as :meth:`ImagePlan.apply <scorepack.preprocess.ImagePlan.apply>` does
        (resizing as :meth:`~scorepack.preprocess.ImagePlan.resize_image` does).

        When it says yes, ``inputs[plan.input]`` is, call by call, one of two things:

        * a 1-D object array of ``bytes``, one 8-bit greyscale or colour JPEG per row,
          already sniffed, header-read and checked against the pixel limit by the core
          (:func:`~scorepack.codecs.encoded_image`); or
        * float (or uint8) pixels as before, for PNGs and other images the core decoded,
          for JSON tensors, and for the warm-up.

        Never both in one call: the batcher only batches work whose arrays have the same
        dtype and row shape. A JPEG that passed the header check but cannot be decoded
        is the client's fault: raise :class:`~scorepack.errors.InvalidImageError` from
        :meth:`predict`; the batcher then retries the batch's requests one by one, so
        only the bad request gets its 400.
        """
        return False

    @property
    def max_batch_size(self) -> int | None:
        """The most rows one :meth:`predict` call accepts (None: no limit of its own).

        The default reads a fixed batch dimension from the signature. Override when the
        framework knows better.
        """
        return self.signature.batch_limit

    def describe(self) -> dict[str, str]:
        """Facts worth showing in ``inspect`` and the server log (device, provider…).

        Override to add framework details; keep the ``device`` key.
        """
        return {"device": str(self.device)}

    @classmethod
    def available_devices(cls) -> list[str]:
        """The devices this framework can use on this machine, e.g. ``["cpu", "cuda:0"]``.

        May import the framework; only ``scorepack backends`` and device resolution call it.
        Override in backends that can use a GPU.
        """
        return ["cpu"]

    def resolve_device(self) -> Device:
        """Turn the requested device into a usable one, or raise.

        ``auto`` picks the first CUDA device the framework sees, else the CPU.
        """
        wanted = self.requested_device
        devices = self.available_devices()
        if wanted.kind == "cpu":
            return wanted
        cuda = [d for d in devices if d.startswith("cuda")]
        if wanted.kind == "auto":
            return Device.parse(cuda[0]) if cuda else Device("cpu")
        if str(wanted) not in devices:
            seen = ", ".join(devices)
            raise DeviceUnavailableError(
                f"{wanted} was requested but {type(self).__name__} can use only: {seen}. "
                "Use --device cpu, or install the framework's CUDA build."
            )
        return wanted


@dataclass(frozen=True)
class BackendSpec:
    """The record a plugin registers for one backend.

    Everything here is cheap to evaluate: ``detect`` looks at files, never at the
    framework; ``requirements`` returns pinned packages for a device kind (``"cpu"`` or
    ``"cuda"``) for scoring packages.
    """

    name: str
    backend: type[Backend]
    formats: tuple[str, ...]
    detect: Callable[[Path], bool]
    framework: str
    distributions: tuple[str, ...]
    install: str
    requirements: Callable[[str], Requirements] = field(default=lambda _kind: Requirements())

    def framework_version(self) -> str | None:
        """The installed framework's version, read from package metadata (no import)."""
        for dist in self.distributions:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    def create(
        self,
        path: str | Path,
        *,
        device: Device | str = "auto",
        options: Mapping[str, Any] | None = None,
    ) -> Backend:
        """A new, not yet loaded, backend instance for ``path``."""
        return self.backend(path, device=device, options=options)


def import_framework(module: str, backend: str, install: str) -> ModuleType:
    """Import a framework module, or raise an error that tells the user how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FrameworkMissingError(backend, module, install) from exc


@contextmanager
def map_errors(
    backend: str,
    action: str = "predict",
    error: type[ScorepackError] = PredictError,
    bad_input: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Translate framework exceptions into scorepack's at the backend boundary.

    scorepack's own errors pass through; exceptions listed in ``bad_input`` become
    :class:`~scorepack.errors.InvalidTensorError` (the client's fault); anything else
    becomes ``error`` (by default :class:`~scorepack.errors.PredictError`), raised from
    the original so the traceback survives.
    """
    try:
        yield
    except ScorepackError:
        raise
    except bad_input as exc:
        raise InvalidTensorError(f"{backend} rejected the input: {_first_line(exc)}") from exc
    except Exception as exc:
        raise error(f"{backend} {action} failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
