"""detgym's benchmark scripts, run from a checkout: ``python -m benchmarks.<name> --help`` (not installed).

Every script reads top to bottom with its settings in one place, prints the ratios it measures side by side in
one run, and writes its results atomically (interrupted runs resume). The comparison harness behind
``detgym compare`` is the library module :mod:`detgym.compare`.
"""
