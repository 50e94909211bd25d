"""The CUDA calls the TensorRT runtime needs, behind one tiny interface: :class:`CudaLayer`.

Two implementations: :class:`CudaBindings` (NVIDIA's ``cuda-python``, ``cuda.bindings.runtime``:
wheels for x86 and Jetson, the CUDA runtime's primary context, usable from any thread; what
NVIDIA's own TensorRT samples use) and :class:`PyCuda` (accepted where pycuda is already
installed, as on many Jetson images; it pushes the device's primary context around every call,
so it too works from any thread, unlike ``pycuda.autoinit``). :func:`open_cuda` picks the first
that imports. Pointers and streams are plain ints; host buffers are pinned NumPy arrays.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from ...errors import FerEdgeError

INSTALL_HINT = ("pip install cuda-bindings (x86: 'fer-edge[tensorrt]'; Jetson: the "
                "cuda-bindings wheel matching JetPack's CUDA, see README 'Jetson')")


class CudaLayer(Protocol):
    name: str

    def device(self) -> tuple[str, str]:
        """(GPU name, compute capability "major.minor") of device 0."""

    def scope(self) -> contextlib.AbstractContextManager:
        """Make the device current on the calling thread for the duration."""

    def malloc(self, nbytes: int) -> int: ...

    def host_empty(self, nbytes: int) -> np.ndarray:
        """A pinned (page-locked) uint8 host buffer."""

    def stream(self) -> int: ...

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None: ...

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None: ...

    def sync(self, stream: int) -> None: ...


class CudaBindings:
    """``cuda.bindings.runtime`` (cuda-python >= 12.6 / cuda-bindings 13): every call returns
    ``(error, *values)``; any error is raised as FerEdgeError with CUDA's own message."""

    name = "cuda-bindings"

    def __init__(self, device_id: int = 0):
        from cuda.bindings import runtime as cudart

        self.rt, self.device_id = cudart, device_id
        n = self._ok(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if n < 1:
            raise FerEdgeError("no CUDA device found")
        self._ok(cudart.cudaSetDevice(device_id), "cudaSetDevice")
        self._owned: list[tuple[str, int]] = []

    def _ok(self, result: tuple, what: str):
        err, *values = result
        if err != self.rt.cudaError_t.cudaSuccess:
            _, msg = self.rt.cudaGetErrorString(err)
            raise FerEdgeError(f"CUDA {what} failed: {msg.decode(errors='replace')}")
        return values[0] if len(values) == 1 else (values or None)

    def device(self) -> tuple[str, str]:
        prop = self._ok(self.rt.cudaGetDeviceProperties(self.device_id),
                        "cudaGetDeviceProperties")
        name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) \
            else str(prop.name)
        return name, f"{prop.major}.{prop.minor}"

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        self._ok(self.rt.cudaSetDevice(self.device_id), "cudaSetDevice")
        yield

    def malloc(self, nbytes: int) -> int:
        ptr = int(self._ok(self.rt.cudaMalloc(nbytes), "cudaMalloc"))
        self._owned.append(("device", ptr))
        return ptr

    def host_empty(self, nbytes: int) -> np.ndarray:
        ptr = int(self._ok(self.rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        self._owned.append(("host", ptr))
        return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr), np.uint8)

    def stream(self) -> int:
        s = self._ok(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self._owned.append(("stream", int(s)))
        return int(s)

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                 "cudaMemcpyAsync (host to device)")

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                 "cudaMemcpyAsync (device to host)")

    def sync(self, stream: int) -> None:
        self._ok(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def __del__(self) -> None:
        free = {"device": "cudaFree", "host": "cudaFreeHost", "stream": "cudaStreamDestroy"}
        for kind, handle in reversed(getattr(self, "_owned", [])):
            with contextlib.suppress(Exception):  # interpreter shutdown: best effort
                getattr(self.rt, free[kind])(handle)


class PyCuda:
    """pycuda, with the device's primary context pushed around each use (not autoinit)."""

    name = "pycuda"

    def __init__(self, device_id: int = 0):
        import pycuda.driver as cuda

        try:
            cuda.init()
            if cuda.Device.count() < 1:
                raise FerEdgeError("no CUDA device found")
            self.dev = cuda.Device(device_id)
            self.ctx = self.dev.retain_primary_context()
        except cuda.Error as e:
            raise FerEdgeError(f"CUDA is not usable (pycuda): {e}") from None
        self.cuda = cuda
        self._keep: list = []  # pycuda frees its allocations when they are collected
        self._streams: dict = {}

    def device(self) -> tuple[str, str]:
        major, minor = self.dev.compute_capability()
        return self.dev.name(), f"{major}.{minor}"

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        self.ctx.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def malloc(self, nbytes: int) -> int:
        mem = self.cuda.mem_alloc(nbytes)
        self._keep.append(mem)
        return int(mem)

    def host_empty(self, nbytes: int) -> np.ndarray:
        buf = self.cuda.pagelocked_empty(nbytes, np.uint8)
        self._keep.append(buf)
        return buf

    def stream(self) -> int:
        s = self.cuda.Stream()
        self._streams[int(s.handle)] = s
        return int(s.handle)

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.cuda.memcpy_htod_async(dst, src, self._streams[stream])

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self._streams[stream])

    def sync(self, stream: int) -> None:
        self._streams[stream].synchronize()


def open_cuda(device_id: int = 0) -> CudaLayer:
    """cuda-bindings if installed, else pycuda; FerEdgeError naming what to install."""
    try:
        import cuda.bindings.runtime  # noqa: F401
    except ImportError:
        pass
    else:
        return CudaBindings(device_id)
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        raise FerEdgeError(f"no CUDA Python layer: {INSTALL_HINT}") from None
    return PyCuda(device_id)
