"""pssm.inference.optim."""
