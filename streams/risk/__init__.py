"""Online risk models: features from snapshot series, learners, delayed labels, metrics."""
