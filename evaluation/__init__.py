"""Scoring trimaps against ground truth, and pictures of the results."""
