"""Check every layer's backward pass against finite differences: see tinyalex/gradcheck.py.

    python gradcheck.py [--layer NAME] [--seed N]
"""

import os

# The checks use tiny arrays: one BLAS thread (tinyalex.gradcheck also limits it with
# threadpoolctl when that is installed). Set before numpy is first imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from tinyalex.gradcheck import main  # noqa: E402

raise SystemExit(main())
