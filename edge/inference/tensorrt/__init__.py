"""TensorRT sub-room: native engines, built on the device that runs them.

``build`` (ONNX -> engine, recorded in bundle.json), ``runtime`` (``TensorRTBackend``),
``cuda`` (the few CUDA runtime calls, through cuda-python or pycuda) and ``cli``
(``fer-edge build-engine``). TensorRT and CUDA are imported only inside the functions that
need them.

May import: the shared top modules and the input room.
"""
