"""PyTorch plugins: every module here imports torch and registers its models."""
