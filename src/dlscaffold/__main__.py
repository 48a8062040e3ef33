"""``python -m dlscaffold``."""

from dlscaffold.cli import main

main()
