"""A repository of models and versions served from one process.

Each model version has its own :class:`~scorepack.scorer.Scorer` (its own batcher and model
thread); all share the process's device. Protocols never hold scorers: they ask the
repository for one per request (:meth:`Repository.get`), so a model can be loaded and
unloaded while the others keep serving.

Versions: a request may name one; without one it goes to the highest version that is
ready (numeric versions compare as numbers, ``10`` above ``9``). A model given without
versions has the single version ``None``.

Model control, as Triton names it: ``none`` loads every model at start and refuses load
and unload requests; ``explicit`` loads every model at start too (or only those of
``load_at_start``, Triton's ``--load-model``), and lets :meth:`Repository.load` and
:meth:`Repository.unload` change that while others serve; it may start with no model at
all (an empty repository folder, whose models ``rescan`` finds on their load). A load
failure leaves the other models serving; the failed model is UNAVAILABLE with the reason
in :meth:`Repository.models` and in the log. An unload refuses new requests for the model,
lets the admitted ones finish, then unloads it and drops the scorer so its memory is freed.

A repository made with ``rescan`` (a repository folder) reads a model's folder again on
each load, as Triton's explicit mode does: a model folder added since the start can be
loaded by name, a version folder added is loaded with the others, one removed is unloaded
and forgotten, and changed settings apply to every version that (re)loads. Versions
already loaded stay loaded as they are (unload, then load, to reload them).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from .errors import (
    BadRequestError,
    ModelControlError,
    ModelLoadError,
    ModelNotFoundError,
    NotReadyError,
    ScorepackError,
)
from .scorer import Scorer

__all__ = [
    "LOADING",
    "MODEL_CONTROL_MODES",
    "READY",
    "UNAVAILABLE",
    "UNLOADING",
    "ModelSource",
    "ModelState",
    "Repository",
    "score_target",
    "version_key",
]

logger = logging.getLogger("scorepack.repository")

READY, LOADING, UNAVAILABLE, UNLOADING = "READY", "LOADING", "UNAVAILABLE", "UNLOADING"
MODEL_CONTROL_MODES = ("none", "explicit")


@dataclass(frozen=True)
class ModelSource:
    """How to make one model version's scorer: ``create()`` returns a new, not started
    :class:`~scorepack.scorer.Scorer` each time the version is (re)loaded."""

    name: str
    version: str | None
    create: Callable[[], Scorer]
    #: where the model comes from (a path), for logs and the repository index
    origin: str = ""


@dataclass(frozen=True)
class ModelState:
    """One model version's state: READY, LOADING, UNAVAILABLE or UNLOADING, and why."""

    name: str
    version: str | None
    state: str
    reason: str = ""


def version_key(version: str | None) -> tuple[int, int, str]:
    """Sort key for versions: numbers as numbers, above names; None lowest."""
    if version is None:
        return (0, 0, "")
    if version.isdigit():
        return (2, int(version), version)
    return (1, 0, version)


class _Slot:
    """One model version: its source, its current scorer (None when not loaded) and why."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.scorer: Scorer | None = None
        self.reason = "not loaded"
        self.unloading = False
        #: meant to be served: set by start and load, cleared by unload
        self.wanted = False

    def state(self) -> ModelState:
        name, version = self.source.name, self.source.version
        scorer = self.scorer
        if self.unloading:
            return ModelState(name, version, UNLOADING, "unloading")
        if scorer is None:
            return ModelState(name, version, UNAVAILABLE, self.reason)
        failure = scorer.batcher.failure_reason
        if failure is not None:
            return ModelState(name, version, UNAVAILABLE, failure)
        if scorer.ready:
            return ModelState(name, version, READY)
        return ModelState(name, version, LOADING, "loading")


class Repository:
    """Owns the scorers of several models and versions and their lifecycles."""

    def __init__(
        self,
        sources: Iterable[ModelSource],
        *,
        model_control: str = "none",
        rescan: Callable[[str], list[ModelSource] | None] | None = None,
        load_at_start: Collection[str] | None = None,
    ) -> None:
        if model_control not in MODEL_CONTROL_MODES:
            raise ValueError(
                f"model control must be one of {MODEL_CONTROL_MODES}, not {model_control!r}"
            )
        self.model_control = model_control
        self._models: dict[str, dict[str | None, _Slot]] = {}
        for source in sources:
            versions = self._models.setdefault(source.name, {})
            if source.version in versions:
                what = _label(source.name, source.version)
                origins = f"{versions[source.version].source.origin} and {source.origin}"
                raise ValueError(f"{what} is given twice ({origins}); give each name once")
            if (source.version is None) != (None in versions) and versions:
                raise ValueError(f"model {source.name!r} mixes a version-less entry with versions")
            versions[source.version] = _Slot(source)
        if not self._models and model_control != "explicit":
            # explicit control may start with none (Triton's explicit mode loads nothing
            # unless told to): models are loaded, found by rescan, later
            raise ValueError("a repository needs at least one model")
        if load_at_start is not None and "*" in load_at_start:
            if len(set(load_at_start)) > 1:
                # Triton's rule: "Wildcard model name '*' must be the ONLY startup model"
                raise ValueError("--load-model '*' loads every model: give it alone")
            load_at_start = None
        if load_at_start is not None:
            if model_control != "explicit":
                raise ValueError(
                    "--load-model goes with --model-control explicit (without it, every "
                    "model loads at start and stays)"
                )
            unknown = sorted(set(load_at_start) - set(self._models))
            if unknown:
                # Triton stops its start on a startup model it cannot find: so does this
                known = (
                    f"the models are {', '.join(sorted(self._models))}"
                    if self._models
                    else "the repository holds no model yet (add its folder, start, then "
                    "load it: POST /v2/repository/models/NAME/load)"
                )
                raise ValueError(f"--load-model {unknown[0]}: no such model; {known}")
        #: the models :meth:`start` loads (None: all), as Triton's ``--load-model``
        self.load_at_start = None if load_at_start is None else frozenset(load_at_start)
        # load and unload of one model never overlap; different models proceed in parallel
        self._locks = {name: threading.Lock() for name in self._models}
        #: a model's sources read again from disk (None: not in the repository folder)
        self._rescan = rescan
        # guards adding a model's lock and swapping the model table
        self._table_lock = threading.Lock()

    @classmethod
    def of(cls, scorer: Scorer) -> Repository:
        """A repository of one model: ``scorer`` itself (started or not)."""
        return cls([ModelSource(scorer.name, scorer.version, lambda: scorer)])

    # --- what is served ---------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The model names, sorted."""
        return sorted(self._models)

    def versions(self, name: str) -> list[str | None]:
        """The versions of ``name``, lowest first."""
        return sorted(self._slots(name), key=version_key)

    def models(self) -> list[ModelState]:
        """The state of every model version, by name then version."""
        return [
            self._models[name][version].state()
            for name in self.names
            for version in self.versions(name)
        ]

    def state(self, name: str, version: str | None = None) -> ModelState:
        """One model's state: the version asked for, or the default version's."""
        return self._slot(name, version).state()

    @property
    def ready(self) -> bool:
        """Every model version meant to be served (not unloaded) is ready."""
        return all(
            slot.state().state == READY
            for versions in self._models.values()
            for slot in versions.values()
            if slot.wanted
        )

    def held(self) -> list[Scorer]:
        """Every scorer held now, by name then version, whatever its state (loading,
        ready, failed, draining): what the metrics, the API documents and a package's
        runtime are made over."""
        return [
            scorer
            for name in self.names
            for version in self.versions(name)
            if (scorer := self.find(name, version)) is not None
        ]

    def scorers(self) -> list[Scorer]:
        """The scorers that are ready now (for metrics)."""
        found = []
        for versions in self._models.values():
            for slot in versions.values():
                scorer = slot.scorer
                if scorer is not None and scorer.ready and not slot.unloading:
                    found.append(scorer)
        return found

    def get(self, name: str, version: str | None = None) -> Scorer:
        """The ready scorer for ``name`` (and ``version``; default: the highest ready one).

        Raises :class:`~scorepack.errors.ModelNotFoundError` for an unknown model or
        version and :class:`~scorepack.errors.NotReadyError` for one not ready.
        """
        slot = self._slot(name, version)
        scorer = slot.scorer
        if scorer is not None and scorer.ready and not slot.unloading:
            return scorer
        label = _label(name, slot.source.version)
        raise NotReadyError(f"The {label} is not ready: {slot.state().reason}.")

    def find(self, name: str, version: str | None = None) -> Scorer | None:
        """The scorer for ``name``/``version`` in whatever state it is, or None when the
        version is not loaded (raises ModelNotFoundError for unknown names or versions)."""
        return self._slot(name, version).scorer

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start loading every model in the background (liveness answers meanwhile); only
        those of ``load_at_start`` when it is given (the others wait for a load)."""
        for name in self.names:
            if self.load_at_start is not None and name not in self.load_at_start:
                continue
            with self._locks[name]:
                for slot in self._models[name].values():
                    if slot.scorer is None:
                        self._start(slot)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every loading model is ready; raise the first load failure."""
        for name, versions in self._models.items():
            for slot in versions.values():
                if slot.scorer is not None:
                    slot.scorer.wait_ready(timeout)
                elif slot.wanted:
                    label = _label(name, slot.source.version)
                    raise ModelLoadError(f"The {label} {slot.reason}.")

    def load(self, name: str, *, timeout: float | None = None) -> None:
        """Load every version of ``name`` that is not loaded, and wait until they are
        ready; a version that fails raises :class:`~scorepack.errors.ModelLoadError` and
        leaves the others (and every other model) as they were. With ``rescan``, the
        model's folder is read first (a model or version added since the start included).
        Explicit mode only."""
        self._check_control("load")
        if name not in self._models:
            found: list[ModelSource] | None = None
            if self._rescan is not None:
                try:
                    found = self._rescan(name)
                except ScorepackError:
                    found = []  # in the repository, unreadable: _refresh says why
            if found is None:
                raise ModelNotFoundError(name, known=self.names)  # before a lock is made
        with self._lock_of(name):
            slots = self._refresh(name) if self._rescan is not None else self._slots(name)
            for slot in slots.values():
                scorer = slot.scorer
                failure = None if scorer is None else scorer.batcher.failure_reason
                if failure is not None:
                    self._drop(slot, failure)
                if slot.scorer is None:
                    self._start(slot)
            failures = []
            for slot in slots.values():
                try:
                    if slot.scorer is not None:
                        slot.scorer.wait_ready(timeout)
                except BaseException as exc:
                    failures.append(f"{_label(name, slot.source.version)}: {exc}")
            if failures:
                raise ModelLoadError("Loading failed: " + "; ".join(failures))

    def unload(self, name: str, *, timeout: float | None = 60.0) -> None:
        """Refuse new requests for ``name``, let admitted ones finish, then unload every
        version and free it. Explicit mode only."""
        self._check_control("unload")
        self._slots(name)  # an unknown name is a ModelNotFoundError
        with self._lock_of(name):
            slots = self._slots(name)  # as a load under this lock left them
            for slot in slots.values():
                slot.wanted = False
                if slot.scorer is None:
                    slot.reason = "unloaded"
                    continue
                slot.unloading = True
                try:
                    slot.scorer.close(timeout)
                finally:
                    self._drop(slot, "unloaded")
                    slot.unloading = False
                logger.info("%s unloaded", _label(name, slot.source.version))
        gc.collect()  # the model's arrays and sessions go now, not at some later collection

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish in-flight work and unload every model (server shutdown)."""
        for versions in self._models.values():
            for slot in versions.values():
                if slot.scorer is not None:
                    slot.scorer.close(timeout)

    # --- internals --------------------------------------------------------------------

    def _lock_of(self, name: str) -> threading.Lock:
        with self._table_lock:
            return self._locks.setdefault(name, threading.Lock())

    def _refresh(self, name: str) -> dict[str | None, _Slot]:
        """Read ``name``'s folder again (under its lock): new versions get slots, versions
        gone from disk are unloaded and dropped, and every slot takes its new source (so
        changed settings apply at its next load). Returns the model's slots."""
        assert self._rescan is not None
        try:
            sources = self._rescan(name)
        except ScorepackError as exc:
            raise ModelLoadError(f"Cannot read model {name!r} from the repository: {exc}") from exc
        if sources is None:
            return self._slots(name)  # not from the repository folder: as it was
        old = self._models.get(name, {})
        new: dict[str | None, _Slot] = {}
        for source in sources:
            slot = old.get(source.version)
            if slot is None:
                slot = _Slot(source)
            else:
                slot.source = source
            new[source.version] = slot
        gone = [slot for version, slot in old.items() if version not in new]
        # a new table, swapped in whole: readers iterate the old one undisturbed
        with self._table_lock:
            table = dict(self._models)
            if new:
                table[name] = new
            else:
                table.pop(name, None)
            self._models = table
        for slot in gone:
            if slot.scorer is not None:
                slot.scorer.close(60.0)
                slot.scorer = None
            logger.info(
                "%s is gone from the repository: unloaded", _label(name, slot.source.version)
            )
        if not new:
            raise ModelNotFoundError(name, known=self.names)
        return new

    def _check_control(self, action: str) -> None:
        if self.model_control != "explicit":
            raise ModelControlError(
                f"Cannot {action} models: this server runs with --model-control "
                f"{self.model_control}; start it with --model-control explicit."
            )

    def _slots(self, name: str) -> dict[str | None, _Slot]:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFoundError(name, known=self.names) from None

    def _slot(self, name: str, version: str | None) -> _Slot:
        slots = self._slots(name)
        if version is not None and version != "":
            if version not in slots:
                known = [v for v in sorted(slots, key=version_key) if v is not None]
                raise ModelNotFoundError(name, version, known=known)
            return slots[version]
        # the default: the highest version that is ready, else the highest of all
        ordered = sorted(slots, key=version_key, reverse=True)
        for candidate in ordered:
            if slots[candidate].state().state == READY:
                return slots[candidate]
        return slots[ordered[0]]

    def _start(self, slot: _Slot) -> None:
        slot.wanted = True
        label = _label(slot.source.name, slot.source.version)
        try:
            scorer = slot.source.create()
            if not scorer.started:
                scorer.start(wait=False)
        except Exception as exc:
            # a model that cannot even be set up (no backend for it…) stays unavailable
            logger.error("%s failed to load: %s", label, exc)
            slot.reason = f"failed to load: {exc}"
            return
        slot.scorer = scorer

    def _drop(self, slot: _Slot, reason: str) -> None:
        scorer, slot.scorer, slot.reason = slot.scorer, None, reason
        if scorer is not None and scorer.started:
            scorer.close(0)


def score_target(repository: Repository, query: dict[str, str]) -> Scorer:
    """The scorer an Azure ML ``/score`` request names: ``?model=NAME&version=V``, both
    taken out of ``query`` (the rest are scoring parameters).

    The one rule of ``/score`` for the embedded server and for a package under azmlinfsrv:
    with one model the name may be left out; with several it is required (400 naming the
    models). An unknown model or version is :class:`~scorepack.errors.ModelNotFoundError`
    (404, naming what is served); a version that is not loaded is
    :class:`~scorepack.errors.NotReadyError` (503). A loaded scorer is returned even before
    it is ready: its own admission answers, as with one model it always has.
    """
    name, version = query.pop("model", None), query.pop("version", None)
    names = repository.names
    if name is None:
        if not names:
            # explicit model control, started empty: nothing to score yet, which a
            # load changes (503, as a model not loaded yet)
            raise NotReadyError(
                "This server serves no model yet: load one with POST "
                "/v2/repository/models/NAME/load, then score it."
            )
        if len(names) > 1:
            raise BadRequestError(
                f"This server scores several models ({', '.join(names)}): name one with "
                "/score?model=NAME."
            )
        name = names[0]
    scorer = repository.find(name, version)
    if scorer is None:
        raise NotReadyError(f"The model {name!r} is not loaded.")
    return scorer


def _label(name: str, version: str | None) -> str:
    return f"model {name!r}" + (f" version {version!r}" if version is not None else "")
