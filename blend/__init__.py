"""Blend out-of-fold predictions, calibrate them to 0..5, write and validate submissions."""
