"""The cleaner: scores, cross-validation, near-duplicates, label issues, decisions."""
