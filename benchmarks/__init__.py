"""CapBench's harness, by role; each package imports only from the ones listed before it.

    settings.py, machine.py   the run settings; what machine a run ran on
    scoring/    the COCO metrics, grounding, diversity, the statistics over seeds
    data/       prepare: sources imported or generated, features extracted
    store/      run and study folders on disk, read back as untrusted input
    report/     the report (answer first), its exports, published reference studies
    run/        studies, ablations, the checks before work, the worker of one run
    perf/       speed, FLOPs and MFU, profiles, the recipe's own timing
    cli.py, parser.py, caption.py   the commands (`python -m benchmarks`)
"""
