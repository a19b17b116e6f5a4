"""The backend contract: what a framework plugin supplies to scorepack.

A plugin registers a :class:`BackendSpec` from its ``register_backends`` hook. The spec
holds cheap, static facts (name, formats, how to detect them, what to install) and the
:class:`Backend` subclass that does the work. Nothing here imports a framework; a backend
imports its framework inside :meth:`Backend.load`.
"""

from __future__ import annotations

import abc
import difflib
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
    BackendOptionError,
    DeviceUnavailableError,
    FrameworkMissingError,
    InvalidTensorError,
    PredictError,
    ScorepackError,
)
from .signature import Signature

if TYPE_CHECKING:
    import numpy as np

    from .cuda import CudaEnvironment
    from .preprocess import ImagePlan

__all__ = [
    "Backend",
    "BackendOption",
    "BackendSpec",
    "Requirements",
    "import_framework",
    "map_errors",
]

Arrays = dict[str, "np.ndarray"]

#: the words a boolean option takes, as most configuration systems spell them
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_TYPE_NAMES: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    object: "any",
}


@dataclass(frozen=True)
class BackendOption:
    """One ``-O name=value`` option a backend takes: a small typed schema.

    The core parses and checks every option against its schema before the model loads
    (``scorepack backends NAME`` lists them), so a backend reads typed values with
    :meth:`Backend.option` and never parses text itself, as MLServer's model-settings
    ``parameters`` and Triton's ``config.pbtxt`` parameters do.

    * ``type``: ``bool`` (true/false, yes/no, on/off, 1/0), ``int``, ``float`` or ``str``;
      ``object`` takes any value (numbers and true/false in text are converted), for
      backends written before options had types.
    * ``default``: what :meth:`Backend.option` returns when the option is not given;
      ``None`` means the backend decides (say how in ``help``).
    * ``choices``: the values a ``str`` option may take (compared case-insensitively,
      returned as written here).
    * ``minimum``: the smallest ``int`` or ``float`` allowed.
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPE_NAMES:
            raise TypeError(
                f"option {self.name}: type must be one of bool, int, float, str or object, "
                f"not {self.type!r}"
            )

    @property
    def type_name(self) -> str:
        """``bool``, ``int``, ``float``, ``str`` or ``any``: what ``backends NAME`` shows."""
        return _TYPE_NAMES[self.type]

    def expected(self) -> str:
        """What a valid value looks like, in words, for error messages."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type is bool:
            return "true or false (true/false, yes/no, on/off, 1/0)"
        kind = {int: "a whole number", float: "a number"}.get(self.type)
        if kind is None:
            return "a string" if self.type is str else "a value"
        if self.minimum is not None:
            kind += f" >= {self.minimum:g}"
        return kind

    def parse(self, value: Any) -> Any:
        """``value`` (text from the command line, or a typed value from a manifest) as
        this option's type; raises :class:`ValueError` saying what was expected."""
        if self.type is object:
            return _scalar(value) if isinstance(value, str) else value
        if self.type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(self.expected())
        if self.type in (int, float):
            return self._number(value)
        text = str(value).strip()
        if self.choices:
            for choice in self.choices:
                if text.lower() == choice.lower():
                    return choice
            raise ValueError(self.expected())
        return text

    def _number(self, value: Any) -> int | float:
        if isinstance(value, bool):  # True is an int to Python, never a count to a user
            raise ValueError(self.expected())
        try:
            number: int | float = self.type(str(value).strip())
        except ValueError:
            raise ValueError(self.expected()) from None
        if self.minimum is not None and number < self.minimum:
            raise ValueError(self.expected())
        return number


def _scalar(text: str) -> Any:
    """Untyped (``object``) options: true/false and numbers in text become values."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class Requirements:
    """What a scoring package must install to run a backend on one kind of device.

    ``pip`` and ``conda`` hold pinned requirement strings; ``base_image`` names the
    container image Azure ML should build on. ``cuda`` is the known-good CUDA environment
    (:mod:`scorepack.cuda`) a GPU package's pins make: driver floor, architectures.
    ``requirements(kind)`` gets ``kind`` ``"cpu"``, ``"cuda"`` or ``"cudaNN"`` (the user
    chose CUDA major NN); a backend without that major raises PackageError.
    """

    pip: tuple[str, ...] = ()
    conda: tuple[str, ...] = ()
    channels: tuple[str, ...] = ("conda-forge",)
    base_image: str | None = None
    cuda: CudaEnvironment | None = None


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

    #: the options this backend takes (``-O key=value``), as typed schemas. Override.
    option_schema: ClassVar[tuple[BackendOption, ...]] = ()
    #: before options had types: name → help text, each taking any value. Prefer
    #: :attr:`option_schema`; still honoured for backends written against it.
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
        #: the options given, parsed and checked against :attr:`option_schema` (defaults
        #: are not filled in: ``name in self.options`` says whether the user gave it)
        self.options: dict[str, Any] = self.parse_options(options or {})
        #: the device actually in use, set by load()
        self.device: Device = Device("cpu")
        self._signature: Signature | None = None

    @classmethod
    def declared_options(cls) -> dict[str, BackendOption]:
        """Every option this backend takes, by name (:attr:`option_schema`, plus untyped
        ones from the older :attr:`options_help`)."""
        declared = {o.name: o for o in cls.option_schema}
        for name, text in cls.options_help.items():
            declared.setdefault(name, BackendOption(name, object, help=text))
        return declared

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any], *, owner: str | None = None) -> dict[str, Any]:
        """``raw`` options parsed to their declared types, or
        :class:`~scorepack.errors.BackendOptionError` naming what is wrong: an option
        nobody declared (with the closest declared name and the valid names), or a value
        of the wrong type. ``owner`` names the backend in the message (default: the
        class's name)."""
        owner = owner or cls.__name__
        declared = cls.declared_options()
        unknown = sorted(set(raw) - set(declared))
        if unknown:
            valid = ", ".join(sorted(declared)) or "none"
            named = []
            for name in unknown:
                close = difflib.get_close_matches(str(name), declared, n=1)
                named.append(f"{name} (did you mean {close[0]}?)" if close else str(name))
            raise BackendOptionError(
                f"unknown option(s) for {owner}: {', '.join(named)}; valid options: {valid}"
            )
        parsed: dict[str, Any] = {}
        for name, value in raw.items():
            try:
                parsed[name] = declared[name].parse(value)
            except ValueError as exc:
                raise BackendOptionError(
                    f"option {name} must be {exc}, not {value!r} ({owner})"
                ) from None
        return parsed

    def option(self, name: str) -> Any:
        """The value of option ``name``: as given, else its declared default."""
        if name in self.options:
            return self.options[name]
        declared = self.declared_options()
        if name not in declared:
            raise KeyError(f"{type(self).__name__} declares no option {name!r}")
        return declared[name].default

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

    @property
    def options(self) -> dict[str, BackendOption]:
        """The ``-O`` options the backend takes, by name (``scorepack backends NAME``)."""
        return self.backend.declared_options()

    def parse_options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Parse and check options without creating a backend (see
        :meth:`Backend.parse_options`); errors name the backend as users name it
        (``the onnx backend``, as ``scorepack backends onnx`` lists its options)."""
        return self.backend.parse_options(raw, owner=f"the {self.name} backend")

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
        self.parse_options(options or {})  # a bad option named as users name the backend
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
