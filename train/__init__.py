"""fer_edge.train: fit emotion classifiers on FER2013 (torch + timm)."""
