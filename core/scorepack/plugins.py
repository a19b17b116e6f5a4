"""The plugin manager, built lazily on first use.

Plugins come from two places: ``DEFAULT_PLUGINS`` (modules that ship inside scorepack,
registered exactly like third-party ones) and the ``scorepack`` entry-point group. A plugin
that fails to import is logged as ``Could not load scorepack plugin 'x': <error>`` and the
rest go on; ``SCOREPACK_STRICT_PLUGINS=1`` makes that an exception instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from typing import Any

import pluggy

from . import hookspecs
from .backend import BackendSpec
from .errors import DuplicateBackendError, PluginError, UnknownBackendError

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "Plugins",
    "check_pending",
    "get_backend",
    "get_backends",
    "get_plugin_manager",
    "get_plugins",
    "make_plugin_manager",
    "reset",
    "set_plugin_manager",
]

ENTRY_POINT_GROUP = "scorepack"

#: modules inside scorepack registered as plugins, before any entry point
DEFAULT_PLUGINS: tuple[str, ...] = (
    "scorepack.targets.azureml_v1",
    "scorepack.targets.azureml_v2",
    "scorepack.targets.kubernetes",
    "scorepack.targets.kserve",
)

logger = logging.getLogger("scorepack.plugins")


def _strict() -> bool:
    return os.environ.get("SCOREPACK_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def make_plugin_manager(
    *, entry_points: bool = True, defaults: bool = True
) -> pluggy.PluginManager:
    """A new plugin manager with the hook specs, default plugins and entry points loaded."""
    pm = pluggy.PluginManager("scorepack")
    pm.add_hookspecs(hookspecs)
    if defaults:
        for module_name in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(module_name), name=module_name)
    if entry_points:
        _load_entry_points(pm)
    check_pending(pm)
    return pm


def check_pending(pm: pluggy.PluginManager) -> None:
    """Fail loudly when a plugin implements a hook scorepack does not have (a misspelling).

    Wraps pluggy's ``check_pending`` so the error names the plugin and the real hooks.
    """
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        callers = {h: getattr(pm.hook, h) for h in vars(pm.hook) if not h.startswith("_")}
        unknown = sorted(
            h
            for h, caller in callers.items()
            if not caller.has_spec()
            and any(impl.plugin is exc.plugin for impl in caller.get_hookimpls())
        )
        known = sorted(h for h, caller in callers.items() if caller.has_spec())
        raise PluginError(
            f"scorepack plugin {name!r} implements unknown hook(s) {', '.join(unknown)}; "
            f"scorepack's hooks are {', '.join(known)}. Check the spelling."
        ) from exc


def _broken(name: str, exc: BaseException) -> None:
    """A plugin failed: a warning and the rest go on, or an error in strict mode."""
    message = f"Could not load scorepack plugin {name!r}: {exc}"
    if _strict():
        raise PluginError(message) from exc
    logger.warning("%s", message)


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(ep.name):
            continue
        if pm.get_plugin(ep.name) is not None:
            # importlib.metadata lists each distribution once, so this is a second
            # distribution using the same plugin name: say so rather than drop it silently
            logger.warning(
                "Ignoring scorepack plugin %r from %s: a plugin of that name is already loaded.",
                ep.name,
                ep.dist.name if ep.dist is not None else ep.value,
            )
            continue
        try:
            plugin = ep.load()
            # a hook implementation with the wrong arguments fails here
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            _broken(ep.name, exc)


class Plugins:
    """What the plugins registered, computed once per plugin manager."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._backends: dict[str, BackendSpec] | None = None
        self._owners: dict[str, str] = {}
        self._targets: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @property
    def backends(self) -> dict[str, BackendSpec]:
        """Backend name → spec, in registration order."""
        with self._lock:
            if self._backends is None:
                self._backends = self._collect_backends()
            return self._backends

    def _collect_backends(self) -> dict[str, BackendSpec]:
        found: dict[str, BackendSpec] = {}
        # call each implementation on its own so a duplicate can name both plugins, and a
        # plugin whose hook fails loses only its own backends
        # (get_hookimpls lists them in registration order; pluggy *calls* them reversed)
        for impl in self.pm.hook.register_backends.get_hookimpls():
            plugin_name = impl.plugin_name
            mine: dict[str, BackendSpec] = {}

            def register(
                spec: BackendSpec, _plugin: str = plugin_name, mine: dict[str, BackendSpec] = mine
            ) -> None:
                if not isinstance(spec, BackendSpec):
                    raise PluginError(f"it registered {spec!r}, not a BackendSpec")
                if spec.name in found:
                    raise DuplicateBackendError(spec.name, self._owners[spec.name], _plugin)
                if spec.name in mine:
                    raise PluginError(f"it registered the backend {spec.name!r} twice")
                mine[spec.name] = spec

            try:
                impl.function(register=register)
            except DuplicateBackendError:
                raise  # two plugins disagree: an error, whichever is at fault
            except Exception as exc:
                _broken(plugin_name, exc)
                continue
            for name, spec in mine.items():
                found[name] = spec
                self._owners[name] = plugin_name
        return found

    def owner(self, backend_name: str) -> str:
        """The plugin (entry-point or module name) that registered a backend."""
        self.backends  # noqa: B018 - fills _owners
        return self._owners[backend_name]

    def distribution(self, backend_name: str) -> str | None:
        """The installed distribution that ships a backend's plugin, if known."""
        owner = self.owner(backend_name)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=owner):
            if ep.dist is not None:
                return str(ep.dist.name)
        return None

    def backend(self, name: str) -> BackendSpec:
        """The backend called ``name``; the error lists the valid names."""
        try:
            return self.backends[name]
        except KeyError:
            raise UnknownBackendError(name, self.backends) from None

    @property
    def deploy_targets(self) -> dict[str, Any]:
        """Deploy target name → target object."""
        with self._lock:
            if self._targets is None:
                targets: dict[str, Any] = {}

                def register(target: Any) -> None:
                    name = str(target.name)
                    if name in targets:
                        raise PluginError(f"Deploy target {name!r} is registered twice.")
                    targets[name] = target

                self.pm.hook.register_deploy_targets(register=register)
                self._targets = targets
            return self._targets


_state: dict[str, Plugins] = {}
_state_lock = threading.Lock()


def get_plugins() -> Plugins:
    """The process-wide plugins, loaded on first use."""
    with _state_lock:
        if "current" not in _state:
            _state["current"] = Plugins(make_plugin_manager())
        return _state["current"]


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    return get_plugins().pm


def set_plugin_manager(pm: pluggy.PluginManager) -> Plugins:
    """Use ``pm`` from now on (tests build their own)."""
    with _state_lock:
        _state["current"] = Plugins(pm)
        return _state["current"]


def reset() -> None:
    """Forget the loaded plugins; the next use loads them again."""
    with _state_lock:
        _state.clear()


def get_backends() -> dict[str, BackendSpec]:
    """Installed backends: name → spec."""
    return get_plugins().backends


def get_backend(name: str) -> BackendSpec:
    """One installed backend by name."""
    return get_plugins().backend(name)
