"""One run in its own process (`python -m benchmarks.run.worker RUN_DIR`): set up (context.py),
train (loop.py), evaluate (evaluate.py), record (record.py)."""
