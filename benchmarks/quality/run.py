"""The quality benchmark's runner (the code is in ``quality_bench.py``; ``--help`` says it all).

    python benchmarks/quality/run.py --plan                      # the rows, what is done, the time left
    python benchmarks/quality/run.py                             # every unfinished row, in order; resumable
    python benchmarks/quality/run.py --only trec6/100/trainer/2  # (re)run one row
    python benchmarks/quality/run.py --summary                   # benchmarks/results/quality.md
    python benchmarks/quality/run.py --tiny                      # smoke: tiny random BERT, 20 rows per split

See benchmarks/quality/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
