"""Blend the pool's out-of-fold predictions (methods in `blend.methods`), calibrate them to 0..5
(`blend.calibrators`), nested CV of the whole (`blend.nested`), the fitted pipeline and run folders
(`blend.pipeline`, `blend.run`), submissions and the report. Built on the tabular layer below it."""
