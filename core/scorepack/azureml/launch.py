"""Run Microsoft's azmlinfsrv on a chosen address.

    python -m scorepack.azureml.launch [--host 127.0.0.1] -- AZMLINFSRV ARGUMENTS

azureml-inference-server-http 1.5 always binds 0.0.0.0 (``DEFAULT_HOST`` in its
``constants.py``, star-imported into ``amlserver.py``, which passes it to gunicorn) and has
no option to change that. Inside a container that is right; on a workstation it exposes
the model to the network. This launcher sets ``amlserver.DEFAULT_HOST`` and then calls
``amlserver.run()``: everything else is Microsoft's server as Azure ML runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["command", "main"]


def command(
    python: str, entry_script: Path, port: int, *server_args: str, host: str = "127.0.0.1"
) -> list[str]:
    """This launcher's command line for azmlinfsrv over ``entry_script`` on ``host:port``
    (an argument list, never a shell string); ``server_args`` go to azmlinfsrv."""
    return [
        python,
        "-m",
        "scorepack.azureml.launch",
        "--host",
        host,
        "--",
        "--entry_script",
        str(entry_script),
        "--port",
        str(port),
        *server_args,
    ]


def _without_control_socket() -> None:
    # gunicorn 27 opens a control socket at a fixed path under $HOME by default, so two
    # servers on one machine would fight over it; Azure's containers run one server each
    try:
        import gunicorn.config
    except ImportError:
        return
    if not hasattr(gunicorn.config, "ControlSocketDisable"):
        return
    args = os.environ.get("GUNICORN_CMD_ARGS", "")
    if "--no-control-socket" not in args.split():
        os.environ["GUNICORN_CMD_ARGS"] = f"{args} --no-control-socket".strip()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``--host``, then hand the remaining arguments to azmlinfsrv."""
    parser = argparse.ArgumentParser(
        prog="python -m scorepack.azureml.launch",
        description="Run azmlinfsrv (Azure ML's inference server) bound to HOST.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "server_args", nargs=argparse.REMAINDER, help="-- then azmlinfsrv's arguments"
    )
    args = parser.parse_args(argv)
    rest = list(args.server_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    try:
        from azureml_inference_server_http import amlserver
    except ImportError as exc:
        sys.exit(f"azureml-inference-server-http is not installed here: {exc}")
    if not hasattr(amlserver, "DEFAULT_HOST") or not callable(getattr(amlserver, "run", None)):
        sys.exit(
            "this azureml-inference-server-http has no amlserver.DEFAULT_HOST/run(); "
            "the launcher supports 1.x"
        )
    _without_control_socket()
    amlserver.DEFAULT_HOST = args.host
    sys.argv = ["azmlinfsrv", *rest]
    amlserver.run()


if __name__ == "__main__":
    main()
