"""Training and evaluation of NKF models."""
