"""`python -m sglang_llada` == the `sglang-llada` console script."""

from __future__ import annotations

import sys

from sglang_llada.cli import main

if __name__ == "__main__":
    sys.exit(main())
