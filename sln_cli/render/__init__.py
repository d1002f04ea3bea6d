"""What sln shows: terminal tables, progress bars, PNG figures and image grids."""
