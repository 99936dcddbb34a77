"""gap: Gradient Ascent Post-training experiments."""
from gap import resolvers as _resolvers  # noqa: F401  (registers the config resolvers)
