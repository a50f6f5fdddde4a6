"""Scores, calibration and pictures of a model's predictions, shared by evaluation and training:
plain numbers and arrays in, no model or dataset code."""
