"""Background jobs on Huey: the retraining pipeline, its queue, and the worker that consumes it."""
