"""Beside the host: `worker.client` imports, and none of the distributions named on the command line is installed.

Run with `python -I` from the repository, so the installed package is imported, not the working tree.
"""

import sys
from importlib import metadata

import worker.client  # noqa: F401 - the import is the check

present = []
for name in sys.argv[1:]:
    try:
        present.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
if present:
    sys.exit(f"installed beside the host but must not be: {', '.join(present)}")
print(f"worker.client imports; none of {len(sys.argv) - 1} worker-side distributions is installed")
