import os

# Tests measure correctness, not speed: one BLAS thread keeps them quiet on a shared box.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
