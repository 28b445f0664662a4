"""Check every layer's backward pass against finite differences, on both routes (layers/ and
layers/fast/): see tinyalex/gradcheck.py.

    python gradcheck.py [--route readable|fast|both] [--layer NAME] [--seed N]
"""

import os

from tinyalex import _runtime

# The checks use tiny arrays: one BLAS thread (tinyalex.gradcheck also limits it with
# threadpoolctl when that is installed). Set before numpy is first imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
_runtime.apply()

from tinyalex.gradcheck import main  # noqa: E402

raise SystemExit(main())
