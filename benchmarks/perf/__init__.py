"""Speed and efficiency: the `perf` command (throughput, FLOPs, MFU, engines), torch.profiler
runs and the Kaggle notebook's recipe timed as the baseline."""
