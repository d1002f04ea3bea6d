"""sln: stochastic label noise (Chen et al., ICLR 2021) for training with noisy labels."""

__version__ = "0.1.0"
