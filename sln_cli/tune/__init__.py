"""`sln tune`: hyperparameters chosen on a noisy validation split with Optuna (optional extra `sln-cli[tune]`)."""
