"""`sln report`: runs and sweeps into the paper's table (mean ± std over seeds, the paper beside ours) and figures."""
