"""Metrics: FOV-aware segmentation scores, distribution distances, sample statistics."""
