"""Inference room: a batch of preprocessed crops -> logits.

``backend`` (the one ``Backend`` interface, ``open_backend``, onnxruntime sessions,
accuracy evaluation), ``ort_providers`` (onnxruntime's CUDA/TensorRT provider options) and
the ``tensorrt`` sub-room (native engines).

May import: the shared top modules and the input room. Never detection, outputs or the loop.
"""
