"""detgym's benchmark scripts, installed with the package: run each as ``python -m benchmarks.<name> --help``.

Every script reads top to bottom with its settings in one place, prints the ratios it measures side by side in
one run, and writes its results atomically (interrupted runs resume). ``detgym compare`` is the main one.
"""
