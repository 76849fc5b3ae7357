"""The data contract shared by every plugin and framework (numpy and h5py only, no framework)."""
