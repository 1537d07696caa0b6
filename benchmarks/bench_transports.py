"""ramxchg beside Queue, Pipe, shared_memory, np.save on disk and Ray: ``ramxchg bench``.

Usage::

    python benchmarks/bench_transports.py [--quick] [--sizes 1K 64M] [--json] [--plot F.png]

Same options as ``ramxchg bench``; also prints the markdown table for docs/benchmarks.md
(``--markdown``). The code lives in `ramxchg.bench`.
"""

from __future__ import annotations

import json
import sys

from ramxchg.bench.report import markdown_table
from ramxchg.cli import main

if __name__ == "__main__":
    if "--markdown" in sys.argv:
        # Turn a saved `ramxchg bench --json` result into the docs table.
        path = sys.argv[sys.argv.index("--markdown") + 1]
        with open(path) as file:
            print(markdown_table(json.load(file)))
        sys.exit(0)
    sys.exit(main(["bench", *sys.argv[1:]]))
