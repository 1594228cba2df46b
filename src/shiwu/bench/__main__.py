import sys

from .worker import _worker

if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    sys.exit(_worker(sys.argv[2]))
print("usage: shiwu bench (this module's own entry point is for its worker processes)", file=sys.stderr)
sys.exit(2)
