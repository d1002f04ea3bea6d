"""`python -m sln_cli` runs the same app as the `sln` console script (and works under torchrun)."""

from sln_cli.cli import main

if __name__ == "__main__":
    main()
