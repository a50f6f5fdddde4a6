"""``python -m keyfer``: the ``keyfer`` command line."""

from keyfer.cli import main

main(prog_name="keyfer")
