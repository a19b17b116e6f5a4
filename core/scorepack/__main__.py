"""``python -m scorepack`` is the ``scorepack`` command."""

from .cli import main

main()
