"""The results on disk: run and study folders (every file name, atomic writes, what replaces what,
what each file must hold) and the TensorBoard scalars."""
