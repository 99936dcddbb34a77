"""gap: Gradient Ascent Post-training experiments."""
from gap import loggers as _loggers  # noqa: F401  (registers the config resolvers)
