"""adrun: a thin experiment runner over anomalib.

The library is the API; ``adrun.cli`` is one client of it. Importing this package
is cheap: anomalib, torch and lightning are imported only by the modules that run
models (``registry``, ``models``, ``coreset``, ``run``).
"""

__version__ = "0.1.0"
