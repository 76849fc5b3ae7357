"""The machine a run ran on, as far as it decides the run's numbers: CPU, instruction sets,
cores and the variables that steer the numeric libraries."""
from __future__ import annotations

import os
from pathlib import Path

# what picks a CPU kernel's code path, and so the last bits of every float a run computes
NUMERICS_ENV = ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
                "TF_ENABLE_ONEDNN_OPTS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS", "KERAS_BACKEND", "CUDA_VISIBLE_DEVICES")


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def environment() -> dict:
    """What determines a run's numbers besides its configuration: the CPU and the instruction sets its
    libraries dispatch on (oneDNN, MKL and Eigen choose AVX2, AVX-512 or AMX kernels at run time, which
    sum in different orders), core and thread counts, and the variables that steer them."""
    import platform

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    try:  # a VM's host name is often generic ("vm"): the boot id tells two sittings apart
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = None
    # host and boot: which machine ran the run (seeds are blocks: the report shows each seed's machine)
    return {"host": platform.node(), "boot": boot, "cpu": cpu, "isa": [f for f in ISA_FLAGS if f in flags],
            "cores": os.cpu_count(), "env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}}
