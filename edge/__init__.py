"""fer_edge.edge: the runtime that ships to the device.

The top of the package holds the loop and what every stage shares:

- the loop: ``pipeline`` (one frame -> detect, crop, classify, track), ``runner`` (sources
  through the pipeline into the outputs, several streams in one batch), ``tracker``,
  ``results`` (what a frame gives), ``cli``/``cliutil`` (``fer-edge``; the error line and
  the option types every CLI shares);
- the shared contract: ``preprocess`` (the one crop -> tensor), ``bundle`` (the model bundle
  format), ``labels``, ``metrics``, ``errors`` (and the redaction of secrets), and the ``data``
  package (dataset readers, splits, FER+ vote distributions).

The rooms, one per stage: ``inputs`` (frames and files in), ``detection`` (faces in a frame),
``inference`` (a batch of crops -> logits, onnxruntime and TensorRT), ``outputs`` (window,
video, JSON Lines, live view, MQTT, events, timelines, the FPS meter), and ``photos``
(folders of stills over worker processes, and face crops for training).

May import: the standard library, numpy, OpenCV, onnxruntime, click, tqdm, and lazily the
optional extras (TensorRT, cuda-python, paho-mqtt, matplotlib). Never ``fer_edge.train``,
``fer_edge.export``, ``fer_edge.benchmarks``, torch or timm (import-linter contracts in
``pyproject.toml``).
"""

__version__ = "0.1.0"
