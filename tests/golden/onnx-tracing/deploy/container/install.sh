#!/bin/sh
# Installs the pinned environment of the scorepack package 'digits' into a new virtual
# environment: the container image's build step (see ../../Dockerfile). Run it from the
# package directory: sh deploy/container/install.sh VENV
# (PYTHON picks the interpreter; it must be Python 3.11, as in the image).
set -eu
venv="${1:?usage: sh deploy/container/install.sh VENV}"
"${PYTHON:-python3}" -m venv "$venv"
pip_install() {
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet "$@"
}
pip_install -r requirements.txt
