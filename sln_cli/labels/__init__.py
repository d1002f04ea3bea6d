"""Noisy labels: generating them (corruption), the label-file format, the papers' official files, CIFAR-N,
and a run's training label set with its held-out noisy validation split."""
