"""Photos room: folders of stills as a batch, beside the frame-by-frame loop.

``workers`` (``--workers N``: a folder's photos through N processes, each with its own
single-thread Pipeline, results in input order; ``fer-edge run`` on folders and ``fer-bench
--realworld``) and ``crops`` (``fer-edge crop``: photos -> face crops framed exactly as the loop
frames them, in the class-folder layout training reads).

May import: the loop (``pipeline``, ``runner``, ``results``), the shared contract and the
input, detection and output rooms. Nothing but the CLI and benchmarks imports it.
"""
