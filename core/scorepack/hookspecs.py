"""Hook specifications. Hooks *register* things; they never score.

A plugin is a module (named by an entry point in the ``scorepack`` group) with functions
marked ``@scorepack.hookimpl``::

    from scorepack import hookimpl, BackendSpec

    @hookimpl
    def register_backends(register):
        register(BackendSpec(name="xgboost", ...))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .backend import BackendSpec

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("scorepack")
hookimpl = pluggy.HookimplMarker("scorepack")


@hookspec
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register model backends by calling ``register(BackendSpec(...))`` once for each.

    Called once per plugin manager, plugin by plugin in registration order. A backend name
    may be registered by one plugin only (a second is a ``DuplicateBackendError`` naming
    both). A plugin whose hook raises loses the backends it registered, with a warning.
    """


@hookspec
def register_deploy_targets(register: Callable[[Any], None]) -> None:
    """Register deployment targets (Azure ML SDK v1, SDK v2, …) with ``register(target)``.

    Built-in targets are registered through this same hook as default plugins.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``scorepack`` click group ``cli`` (``@cli.command()``)."""
