"""Training: the SGD step, the epoch's passes, the run loop, its live state and checkpoints, the weight EMA,
devices and torchrun."""
