"""pssm.inference.mcmc."""
