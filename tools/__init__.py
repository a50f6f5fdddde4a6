"""Maintained offline tools, run from the repository root as ``python -m tools.<name>``.

They regenerate what keyfer ships (the converted weights, a model's head, the test goldens) and
check it against the originals; none of them is part of the installed package.
"""
