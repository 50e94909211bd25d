"""fer_edge.benchmarks: accuracy, latency, throughput and pipeline FPS per bundle."""
