"""CapBench's harness: CLI, registry, study runner, metrics, statistics and reports."""
