"""Keras 3 plugins: every module here imports keras and registers its models."""
