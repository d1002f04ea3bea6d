"""`sln sweep`: grids of runs (presets × methods × overrides × seeds), run locally or through Slurm, resumable."""
