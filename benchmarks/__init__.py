"""Speed and peer comparisons (not tests), run from the repository root as
``python -m benchmarks.<name>``."""
