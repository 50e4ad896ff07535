"""The lesson's own pieces: SGD from scratch, and the demo dataset."""
