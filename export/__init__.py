"""fer_edge.export: checkpoint -> model bundle (ONNX FP32, INT8 QDQ, TensorRT engines)."""
