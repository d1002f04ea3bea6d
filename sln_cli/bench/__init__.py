"""`sln bench`: training throughput against a re-creation of the official loop and the hardware ceiling
(`training.py`), and the Clothing1M input-pipeline figures (`pipeline.py`)."""
