"""Fixture backends for the server and batching tests (no ML framework needed).

* :class:`EchoBackend` returns its input: ``x`` float32 [batch, 2] → ``y`` float32 [batch, 2].
  Its ``cost_ms`` option makes a call's cost grow with the square of its rows (a model
  that is slower per row at larger batches, for the preferred batch size).
* :class:`SlowBackend` is an echo that can be held: tests close :attr:`SlowBackend.gate`
  (or :attr:`SlowBackend.load_gate`) to keep the model thread busy in ``predict`` (or in
  ``load``) until they open it, so what happens meanwhile can be checked structurally,
  without timing. The ``delay`` option makes every call sleep, for a process boundary
  (``scorepack serve``), where no gate can reach; the ``hold`` option is a gate across
  one: every call waits while that file exists (a ``marker`` line says it has begun).
* :class:`ErrorBackend` is an echo that fails a whole call when any row is "poisoned"
  (``x[:, 0] < 0``), the way a framework fails a batch because of one bad row.
* :class:`TypesBackend` takes and gives several dtypes (float32, int64, bool, strings), for
  the V2 datatype tests.
* :class:`WideTypesBackend` takes the datatypes TypesBackend does not (float16, uint8,
  uint64, strings as an input), for the V2 fuzzing.
* :class:`ImageAndScaleBackend` takes an image and a tensor beside it (images over V2
  come with the model's other inputs).
* :class:`ScalarBackend` takes a scalar beside its rows (an input without a batch
  dimension, as an ONNX graph may have); a closed :attr:`ScalarBackend.gate` holds it.
* :class:`EncodedImageBackend` takes JPEG bytes (``Backend.accepts_encoded_images``) and
  decodes them itself, as a GPU backend does, with Pillow.

This module is also a scorepack plugin (``register_backends``), so a subprocess can serve
these backends through the real ``scorepack serve`` once an entry point names it (see
:func:`write_entry_point`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from scorepack import Backend, BackendSpec, Signature, TensorSpec, hookimpl, map_errors

__all__ = [
    "EchoBackend",
    "EncodedImageBackend",
    "ErrorBackend",
    "ImageAndScaleBackend",
    "ScalarBackend",
    "SlowBackend",
    "TypesBackend",
    "WideTypesBackend",
    "write_entry_point",
]

#: how long a held gate may block before the fixture gives up (a failing test must not hang)
GATE_TIMEOUT = 30.0
#: the same for the ``hold`` file, which a test in another process removes (more margin:
#: the test meanwhile waits on that process's metrics under a busy machine)
HOLD_TIMEOUT = 120.0


class EchoBackend(Backend):
    """``y = x`` for ``x`` float32 [batch, 2]; records the rows of every predict call."""

    options_help: ClassVar[Mapping[str, str]] = {
        "delay": "seconds every predict call sleeps (default 0)",
        "load_delay": "seconds load() sleeps (default 0)",
        "marker": "a file every predict call appends its row count to",
        "record": "keep every call's rows in calls/seen (default true); false for long "
        "runs served as a process, where nobody reads them and they grow with every request",
        "hold": "a file: every predict call waits (after the marker) while it exists",
        "cost_ms": "every predict call sleeps cost_ms × rows² milliseconds, so the cost per "
        "row rises with the batch (default 0): the preferred batch size tests",
    }

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        #: rows of every predict call, warm-up included, in order
        self.calls: list[int] = []
        #: every row every predict call was given, as tuples
        self.seen: list[tuple[float, ...]] = []
        # the two lists above keep ~150 bytes per request for ever: fine for a test, but
        # the overload soak serves this fixture for 57,000 requests and measured them as
        # an RSS leak of the server (-O record=false there)
        self.record = bool(self.options.get("record", True))
        self.loaded = False
        self.unloaded = False
        self.predict_thread: set[str] = set()

    def load(self) -> None:
        time.sleep(float(self.options.get("load_delay", 0)))
        self.signature = Signature(
            inputs=(TensorSpec("x", "float32", (None, 2)),),
            outputs=(TensorSpec("y", "float32", (None, 2)),),
        )
        self.loaded = True

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        if self.record:
            self.calls.append(int(x.shape[0]))
            self.seen.extend(tuple(row) for row in x.tolist())
        self.predict_thread.add(threading.current_thread().name)
        marker = self.options.get("marker")
        if marker:
            with open(marker, "a", encoding="utf-8") as fh:
                fh.write(f"{x.shape[0]}\n")
        hold = self.options.get("hold")
        if hold:
            deadline = time.monotonic() + HOLD_TIMEOUT
            while Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(float(self.options.get("delay", 0)))
        # a sleep never ends early: whatever else the machine runs, a call of n rows
        # takes at least n² × cost_ms, so a smaller batch is always cheaper per row
        time.sleep(float(self.options.get("cost_ms", 0)) * len(x) * len(x) / 1000)
        return {"y": x.copy()}

    def unload(self) -> None:
        self.unloaded = True
        marker = self.options.get("marker")
        if marker:
            with open(marker, "a", encoding="utf-8") as fh:
                fh.write("unload\n")


class SlowBackend(EchoBackend):
    """An echo whose ``load`` and ``predict`` can be held by closed gates.

    Gates start open. A test calls ``backend.gate.clear()`` before the requests it wants
    held and ``backend.gate.set()`` to let them go; :attr:`entered` is set each time
    ``predict`` starts waiting, so a test knows the model thread is busy.
    """

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.load_gate = threading.Event()
        self.load_gate.set()
        self.entered = threading.Event()
        self.load_entered = threading.Event()

    def load(self) -> None:
        self.load_entered.set()
        if not self.load_gate.wait(GATE_TIMEOUT):
            raise RuntimeError("load gate never opened")
        super().load()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        if not self.gate.wait(GATE_TIMEOUT):
            raise RuntimeError("predict gate never opened")
        return super().predict(inputs)


class PoisonedRowError(ValueError):
    """What ErrorBackend raises: a stand-in for a framework rejecting one row."""


class ErrorBackend(SlowBackend):
    """Fails the whole call when any row has ``x[:, 0] < 0``, like a framework would."""

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with map_errors("error-fixture", bad_input=(PoisonedRowError,)):
            x = inputs["x"]
            bad = np.flatnonzero(x[:, 0] < 0)
            if bad.size:
                self.entered.set()
                self.calls.append(int(x.shape[0]))
                raise PoisonedRowError(f"row {int(bad[0])} is poisoned (x[0] < 0)")
            return super().predict(inputs)


class TypesBackend(Backend):
    """``f`` float32 [batch, 2], ``i`` int64 [batch, 3], ``b`` bool [batch, 1] →
    ``twice`` float32 (2·f), ``total`` int64 [batch] (row sums of i), ``negated`` bool
    (not b) and ``word`` strings [batch] ("yes"/"no" from b)."""

    def load(self) -> None:
        self.signature = Signature(
            inputs=(
                TensorSpec("f", "float32", (None, 2)),
                TensorSpec("i", "int64", (None, 3)),
                TensorSpec("b", "bool", (None, 1)),
            ),
            outputs=(
                TensorSpec("twice", "float32", (None, 2)),
                TensorSpec("total", "int64", (None,)),
                TensorSpec("negated", "bool", (None, 1)),
                TensorSpec("word", "object", (None,)),
            ),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        b = inputs["b"][:, 0]
        with np.errstate(over="ignore"):  # 2 × 3e38 is inf in float32, as in any model
            twice = inputs["f"] * 2
        return {
            "twice": twice,
            "total": inputs["i"].sum(axis=1),
            "negated": ~inputs["b"],
            "word": np.array([b"yes" if v else b"no" for v in b], dtype=object),
        }


class WideTypesBackend(Backend):
    """``h`` float16 [batch, 2], ``u`` uint8 [batch, 3], ``q`` uint64 [batch, 1], ``s``
    strings [batch] → ``h2`` float16 (2·h), ``usum`` uint16 [batch] (row sums of u), ``q``
    (as it came) and ``s`` (the strings as they came: any bytes, so not always text JSON
    can carry)."""

    def load(self) -> None:
        self.signature = Signature(
            inputs=(
                TensorSpec("h", "float16", (None, 2)),
                TensorSpec("u", "uint8", (None, 3)),
                TensorSpec("q", "uint64", (None, 1)),
                TensorSpec("s", "object", (None,)),
            ),
            outputs=(
                TensorSpec("h2", "float16", (None, 2)),
                TensorSpec("usum", "uint16", (None,)),
                TensorSpec("q", "uint64", (None, 1)),
                TensorSpec("s", "object", (None,)),
            ),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with np.errstate(over="ignore"):  # 2 × 60000 is inf in float16, as in any model
            h2 = inputs["h"] * np.float16(2)
        return {
            "h2": h2,
            "usum": inputs["u"].sum(axis=1, dtype=np.uint16),
            "q": inputs["q"].copy(),
            "s": inputs["s"].copy(),
        }


class ImageAndScaleBackend(Backend):
    """``image`` float32 [batch, 8, 8, 3] (decoded by the core) and ``scale`` float32
    [batch, 1] → ``mean`` float32 [batch] (each image's mean pixel × its scale) and
    ``scale`` (as it came)."""

    def load(self) -> None:
        self.signature = Signature(
            inputs=(
                TensorSpec("image", "float32", (None, 8, 8, 3)),
                TensorSpec("scale", "float32", (None, 1)),
            ),
            outputs=(
                TensorSpec("mean", "float32", (None,)),
                TensorSpec("scale", "float32", (None, 1)),
            ),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scale = inputs["scale"]
        with np.errstate(over="ignore", invalid="ignore"):
            mean = inputs["image"].mean(axis=(1, 2, 3)) * scale[:, 0]
        return {"mean": mean.astype(np.float32), "scale": scale.copy()}


class ScalarBackend(Backend):
    """``x`` float32 [batch, 2] and ``k`` float32 [] (no batch dimension) → ``y = k·x``;
    :attr:`calls` records ``(rows, k)`` per call."""

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.calls: list[tuple[int, float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def load(self) -> None:
        self.signature = Signature(
            inputs=(
                TensorSpec("x", "float32", (None, 2)),
                TensorSpec("k", "float32", (), batched=False),
            ),
            outputs=(TensorSpec("y", "float32", (None, 2)),),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, k = inputs["x"], inputs["k"]
        assert k.shape == (), f"k has shape {k.shape}, not a scalar's"
        self.entered.set()
        if not self.gate.wait(GATE_TIMEOUT):
            raise RuntimeError("predict gate never opened")
        self.calls.append((len(x), float(k)))
        return {"y": x * k}


class EncodedImageBackend(Backend):
    """An image model that decodes JPEGs itself, as a GPU backend does, but with Pillow.

    ``image`` float32 [batch, 16, 16, 3] → ``pixels``: the preprocessed pixels themselves.
    It accepts encoded images (``-O encoded=false`` declines them, for the normal path):
    a call gets either JPEG bytes, decoded here at full size and preprocessed with the
    core's plan, or pixels the core decoded. Like nvJPEG's batched decode, one corrupt
    JPEG fails the whole call with InvalidImageError. :attr:`calls` records
    ``("jpeg" | "pixels", rows)`` per call; a closed :attr:`gate` holds ``predict``.
    """

    SIZE = 16
    options_help: ClassVar[Mapping[str, str]] = {
        "encoded": "take JPEG bytes and decode them here (default true)",
    }

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.calls: list[tuple[str, int]] = []
        self.plan: Any = None
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def load(self) -> None:
        size = self.SIZE
        self.signature = Signature(
            inputs=(TensorSpec("image", "float32", (None, size, size, 3)),),
            outputs=(TensorSpec("pixels", "float32", (None, size, size, 3)),),
        )

    def accepts_encoded_images(self, plan: Any) -> bool:
        if str(self.options.get("encoded", "true")).lower() == "false":
            return False
        self.plan = plan
        return True

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["image"]
        self.entered.set()
        if not self.gate.wait(GATE_TIMEOUT):
            raise RuntimeError("predict gate never opened")
        if x.dtype == object:
            self.calls.append(("jpeg", len(x)))
            x = np.stack([self._decode(body) for body in x])
        else:
            self.calls.append(("pixels", len(x)))
        return {"pixels": np.asarray(x, dtype=np.float32)}

    def _decode(self, body: bytes) -> np.ndarray:
        import io

        from PIL import Image

        from scorepack.errors import InvalidImageError

        assert body[:3] == b"\xff\xd8\xff", "only JPEGs come undecoded"
        try:
            with Image.open(io.BytesIO(body)) as image:
                image.load()  # every pixel, no reduced-size decoding
                return np.asarray(self.plan.apply(image))
        except OSError as exc:
            raise InvalidImageError(f"The fixture could not decode a JPEG: {exc}") from exc


def _suffix(suffix: str) -> Callable[[Path], bool]:
    return lambda path: path.suffix == suffix


SPECS = tuple(
    BackendSpec(
        name=name,
        backend=cls,
        formats=(f"*{suffix} file (test fixture)",),
        detect=_suffix(suffix),
        framework="numpy",
        distributions=("numpy",),
        install="pip install numpy",
    )
    for name, cls, suffix in (
        ("echo-fixture", EchoBackend, ".echo"),
        ("slow-fixture", SlowBackend, ".slow"),
        ("error-fixture", ErrorBackend, ".error"),
        ("types-fixture", TypesBackend, ".types"),
    )
)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    for spec in SPECS:
        register(spec)


def write_entry_point(site: Path) -> Path:
    """Make this module an installed scorepack plugin for processes with ``site`` on
    PYTHONPATH (a ``.dist-info`` with an entry point, as pip would write it)."""
    dist = site / "scorepack_fixture_backends-0.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: scorepack-fixture-backends\nVersion: 0.0.0\n",
        encoding="utf-8",
    )
    (dist / "entry_points.txt").write_text(
        "[scorepack]\nfixture-backends = fixture_backends\n", encoding="utf-8"
    )
    return dist
