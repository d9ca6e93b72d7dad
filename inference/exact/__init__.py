"""pssm.inference.exact."""
