"""Where cells run: one interface (``base.Backend``), three backends.

* ``serial``: one cell after the other in this process (the default).
* ``process``: ``--jobs N`` worker processes, kept for the whole sweep.
* ``ray``: each cell a Ray task on a cluster (``--backend ray``); the only module that imports ray.

The sweep picks one and books the ``Event`` values it reports; a backend never imports the sweep.
To add a backend: a module here with a class that has ``name`` and ``run(cells, root, exp_dir,
report)``, which runs each cell through ``base.run_one`` (or reproduces its failure rule).
"""

from adrun.backends.base import Backend, Event, Interrupts, Record, Report, Result, dead_record, run_one

__all__ = ["Backend", "Event", "Interrupts", "Record", "Report", "Result", "dead_record", "run_one"]
