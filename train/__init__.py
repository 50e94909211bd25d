"""fer_edge.train: fit emotion classifiers on FER2013 (torch + timm).

At the top, the classifier: ``cli`` (``fer-train``), ``trainer``, ``engine``, ``models``,
``augment``, ``checkpoint``, ``distributed``, ``rundir``, ``report``. The ``detector`` room
holds the face detector's training. May import ``fer_edge.edge``; never ``export`` or
``benchmarks``.
"""
