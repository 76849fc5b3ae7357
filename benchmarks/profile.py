"""`python -m benchmarks.profile`: the command's short name; the code is benchmarks/perf/profile.py."""
from benchmarks.perf.profile import main

if __name__ == "__main__":
    raise SystemExit(main())
