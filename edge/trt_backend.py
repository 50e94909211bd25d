"""Native TensorRT engines (TensorRT 10 API) with pycuda for memory and streams.

Optional: the ``[tensorrt]`` extra, on a machine with an NVIDIA GPU (a Jetson, a workstation).
Engines are built on the device that runs them (``fer-export --trt``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import FerEdgeError


def tensorrt_unavailable_reason() -> str | None:
    """None when tensorrt, pycuda and a CUDA device are all usable; else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (pip install 'fer-edge[tensorrt]')"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA device found"
    except ImportError:
        return "pycuda is not installed (pip install 'fer-edge[tensorrt]')"
    except Exception as e:  # pycuda.driver.Error when no driver is loaded
        return f"CUDA is not usable: {e}"
    return None


class TensorRTBackend:
    """A deserialized engine with one input and one output; batch within its profile."""

    def __init__(self, engine_path: str | os.PathLike):
        reason = tensorrt_unavailable_reason()
        if reason:
            raise FerEdgeError(f"TensorRT backend unavailable: {reason}")
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context)
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda = cuda
        path = Path(engine_path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise FerEdgeError(f"{path}: TensorRT could not deserialize the engine (built by "
                               "another TensorRT version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise FerEdgeError(f"{path}: expected one input and one output, got {ins} / {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self.in_dtype = trt.nptype(self.engine.get_tensor_dtype(self.input_name))
        self.out_dtype = trt.nptype(self.engine.get_tensor_dtype(self.output_name))
        self.stream = cuda.Stream()
        self._capacity = 0
        self.name = "tensorrt"

    def _ensure(self, x_nbytes: int, y_nbytes: int) -> None:
        if x_nbytes + y_nbytes > self._capacity:
            self.d_in = self._cuda.mem_alloc(x_nbytes)
            self.d_out = self._cuda.mem_alloc(y_nbytes)
            self._capacity = x_nbytes + y_nbytes

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > self.max_batch:  # split to the engine's profile
            return np.concatenate([self(batch[i:i + self.max_batch])
                                   for i in range(0, len(batch), self.max_batch)])
        x = np.ascontiguousarray(batch, dtype=self.in_dtype)
        self.context.set_input_shape(self.input_name, x.shape)
        y = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), self.out_dtype)
        self._ensure(x.nbytes, y.nbytes)
        self.context.set_tensor_address(self.input_name, int(self.d_in))
        self.context.set_tensor_address(self.output_name, int(self.d_out))
        self._cuda.memcpy_htod_async(self.d_in, x, self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise FerEdgeError("TensorRT execution failed")
        self._cuda.memcpy_dtoh_async(y, self.d_out, self.stream)
        self.stream.synchronize()
        return y.astype(np.float32, copy=False)
