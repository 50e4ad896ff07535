"""Models: the training recipe, the registry of versions, the classifier, reports."""
