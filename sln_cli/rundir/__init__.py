"""The run directory: its files and their contract, locks, ownership, and the bounded readers and atomic
writers that every file sln reads or writes goes through."""
