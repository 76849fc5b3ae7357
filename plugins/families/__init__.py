"""One declaration per model architecture, framework-free, imported by both frameworks' plugin files:
its hyperparameters with their defaults, the values each accepts, what it reads, and the small sizes
tests build it at. What differs between the twins (PyTorch's second LSTM bias, how each framework
masks padding) is declared here too, per framework, so that a difference is written down once."""
