"""Face-detector training room: ``dataset`` (builds the detection set from public data),
``teacher`` (CenterFace labels merged into it), ``data`` (reading and augmenting it,
hard-negative crops included), ``model`` (the network), ``training`` (the loop) and
``cli`` (``fer-train-detector``).

May import ``fer_edge.edge`` and the classifier's training helpers (checkpoint, rundir,
report).
"""
