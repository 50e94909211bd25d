"""The CUDA calls the TensorRT runtime needs, behind one tiny interface: :class:`CudaLayer`.

Three implementations: :class:`CudaBindings` (NVIDIA's ``cuda-bindings``,
``cuda.bindings.runtime``: the CUDA runtime's primary context, usable from any thread; what
NVIDIA's own TensorRT samples use), :class:`CudaRuntime` (a ``ctypes`` binding to the system's
own ``libcudart``, e.g. JetPack's ``/usr/local/cuda/lib64/libcudart.so.12``: no wheel needed,
and no question whether a PyPI wheel built on the SBSA toolkit suits L4T) and :class:`PyCuda`
(accepted where pycuda is already installed; it pushes the device's primary context around
every call, so it too works from any thread, unlike ``pycuda.autoinit``). :func:`open_cuda`
tries libcudart first on a Jetson, cuda-bindings first elsewhere, pycuda last. Pointers and
streams are plain ints; host buffers are pinned NumPy arrays.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from ...errors import FerEdgeError

INSTALL_HINT = ("on a Jetson, JetPack's CUDA runtime (libcudart.so, package cuda-cudart-*); "
                "elsewhere pip install 'fer-edge[tensorrt-cu12]' or 'fer-edge[tensorrt-cu13]' "
                "(cuda-bindings), see README 'Jetson'")
# the CUDA runtime's shared library, newest first; JetPack installs it under /usr/local/cuda
LIBCUDART = ("libcudart.so.13", "libcudart.so.12", "libcudart.so",
             "/usr/local/cuda/lib64/libcudart.so.13", "/usr/local/cuda/lib64/libcudart.so.12",
             "/usr/local/cuda/lib64/libcudart.so")
MEMCPY_HOST_TO_DEVICE, MEMCPY_DEVICE_TO_HOST = 1, 2  # cudaMemcpyKind
ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76  # cudaDeviceAttr
DEVICE_PROP_BYTES = 4096  # > sizeof(cudaDeviceProp) in CUDA 12 and 13; the name comes first


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
    """``cuda.bindings.runtime`` (cuda-python 12.6.1+ / cuda-bindings 12.8+, 13.x): every call
    returns ``(error, *values)``; any error is raised as FerEdgeError with CUDA's own message."""

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
        return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

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


class CudaRuntime:
    """``ctypes`` over ``libcudart`` (the C runtime API, stable across CUDA 12 and 13): the
    calls the TensorRT runtime needs and their frees. Every call returns a cudaError_t; any
    error is raised as FerEdgeError with CUDA's own message (cudaGetErrorString)."""

    name = "libcudart"

    def __init__(self, device_id: int = 0, library: str | None = None):
        self.lib = load_libcudart(library)
        self.device_id = device_id
        self._owned: list[tuple[str, int]] = []
        n = ctypes.c_int(0)
        self._ok(self.lib.cudaGetDeviceCount(ctypes.byref(n)), "cudaGetDeviceCount")
        if n.value < 1:
            raise FerEdgeError("no CUDA device found")
        self._ok(self.lib.cudaSetDevice(device_id), "cudaSetDevice")

    def _ok(self, err: int, what: str) -> None:
        if err != 0:
            self.lib.cudaGetErrorString.restype = ctypes.c_char_p
            msg = self.lib.cudaGetErrorString(err) or b"unknown error"
            raise FerEdgeError(f"CUDA {what} failed: {msg.decode(errors='replace')} "
                               f"(cudaError {err}, {self.name})")

    def device(self) -> tuple[str, str]:
        prop = ctypes.create_string_buffer(DEVICE_PROP_BYTES)
        get = getattr(self.lib, "cudaGetDeviceProperties_v2", None) \
            or self.lib.cudaGetDeviceProperties
        self._ok(get(prop, self.device_id), "cudaGetDeviceProperties")
        cc = [ctypes.c_int(0), ctypes.c_int(0)]
        for value, attr in zip(cc, (ATTR_CC_MAJOR, ATTR_CC_MINOR), strict=True):
            self._ok(self.lib.cudaDeviceGetAttribute(ctypes.byref(value), attr,
                                                     self.device_id), "cudaDeviceGetAttribute")
        return prop.raw[:256].split(b"\0", 1)[0].decode(errors="replace"), \
            f"{cc[0].value}.{cc[1].value}"

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        self._ok(self.lib.cudaSetDevice(self.device_id), "cudaSetDevice")
        yield

    def _alloc(self, kind: str, fn: str, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._ok(getattr(self.lib, fn)(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), fn)
        self._owned.append((kind, int(ptr.value or 0)))
        return int(ptr.value or 0)

    def malloc(self, nbytes: int) -> int:
        return self._alloc("device", "cudaMalloc", nbytes)

    def host_empty(self, nbytes: int) -> np.ndarray:
        ptr = self._alloc("host", "cudaMallocHost", nbytes)
        return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self._ok(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        self._owned.append(("stream", int(s.value or 0)))
        return int(s.value or 0)

    def _copy(self, dst: int, src: int, nbytes: int, kind: int, stream: int, what: str) -> None:
        self._ok(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src),
                                          ctypes.c_size_t(nbytes), kind,
                                          ctypes.c_void_p(stream)), what)

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._copy(dst, src.ctypes.data, src.nbytes, MEMCPY_HOST_TO_DEVICE, stream,
                   "cudaMemcpyAsync (host to device)")

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._copy(dst.ctypes.data, src, dst.nbytes, MEMCPY_DEVICE_TO_HOST, stream,
                   "cudaMemcpyAsync (device to host)")

    def sync(self, stream: int) -> None:
        self._ok(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)),
                 "cudaStreamSynchronize")

    def __del__(self) -> None:
        free = {"device": "cudaFree", "host": "cudaFreeHost", "stream": "cudaStreamDestroy"}
        for kind, handle in reversed(getattr(self, "_owned", [])):
            with contextlib.suppress(Exception):  # interpreter shutdown: best effort
                getattr(self.lib, free[kind])(ctypes.c_void_p(handle))


def load_libcudart(library: str | None = None) -> ctypes.CDLL:
    """``library``, else the first of :data:`LIBCUDART` that loads; ImportError if none."""
    tried = [library] if library else list(LIBCUDART)
    for name in tried:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise ImportError(f"no CUDA runtime library ({', '.join(tried)})")


def is_jetson() -> bool:
    """A Jetson (L4T): /etc/nv_tegra_release, or an nvidia,tegra device tree."""
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return b"nvidia,tegra" in Path("/proc/device-tree/compatible").read_bytes()
    except OSError:
        return False


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


def open_cuda(device_id: int = 0, jetson: bool | None = None) -> CudaLayer:
    """The first CUDA layer that imports: on a Jetson JetPack's own libcudart, then
    cuda-bindings; elsewhere cuda-bindings, then a system libcudart; pycuda last.
    FerEdgeError naming what to install when none does; CUDA's own error when one imports but
    CUDA is not usable."""
    def bindings() -> CudaLayer:
        import cuda.bindings.runtime  # noqa: F401

        return CudaBindings(device_id)

    def runtime() -> CudaLayer:
        return CudaRuntime(device_id)

    def pycuda() -> CudaLayer:
        import pycuda.driver  # noqa: F401

        return PyCuda(device_id)

    order = (runtime, bindings) if (is_jetson() if jetson is None else jetson) \
        else (bindings, runtime)
    for layer in (*order, pycuda):
        try:
            return layer()
        except ImportError:
            continue
    raise FerEdgeError(f"no CUDA Python layer: {INSTALL_HINT}")
