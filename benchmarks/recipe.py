"""`python -m benchmarks.recipe`: the command's short name; the code is benchmarks/perf/recipe.py."""
from benchmarks.perf.recipe import main

if __name__ == "__main__":
    raise SystemExit(main())
