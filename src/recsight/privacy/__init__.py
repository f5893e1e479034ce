"""Privacy: erasure, pseudonymous ids, differentially private training and counts, and
federated training (each in its own module; the optional ones import their libraries
lazily)."""
