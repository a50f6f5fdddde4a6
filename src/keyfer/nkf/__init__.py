"""NKF: Keypoint Features, their regularization by landmark perturbation, and RKFA."""
