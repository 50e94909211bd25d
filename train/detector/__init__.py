"""Face-detector training room: ``dataset`` (builds the detection set from public data),
``data`` (reading and augmenting it), ``model`` (the network), ``training`` (the loop) and
``cli`` (``fer-train-detector``).

May import ``fer_edge.edge`` and the classifier's training helpers (checkpoint, rundir,
report).
"""
