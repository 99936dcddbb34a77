"""gap: Gradient Ascent Post-training experiments."""
import os

# PyTorch's CPU allocator: tensors of 2 MB and more on transparent huge pages (Linux), read at the first such
# allocation. Without it every large activation is fresh memory faulted in 4 kB pages: an element-wise
# op over a 16 x 395 x 1536 fp32 activation took 22 ms instead of 8 (its output's page faults).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from gap import resolvers as _resolvers  # noqa: E402, F401  (registers the config resolvers)
