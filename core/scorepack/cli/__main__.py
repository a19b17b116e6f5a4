"""``python -m scorepack.cli``: the same as the ``scorepack`` command."""

from . import main

main()
