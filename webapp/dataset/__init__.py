"""The dataset: the store (images, labels, events), cleaned.csv, the unlabeled queue, zips."""
