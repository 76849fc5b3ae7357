"""The results on disk: run and study folders (every file name, atomic writes, what replaces
what), TensorBoard scalars, published reference studies and the machine-readable exports."""
