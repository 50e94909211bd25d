"""fer_edge.edge: the runtime that ships to the device.

Everything every stage shares lives here (labels, preprocessing, dataset readers, metrics,
the model-bundle format), and nothing here imports torch or timm.
"""

__version__ = "0.1.0"
