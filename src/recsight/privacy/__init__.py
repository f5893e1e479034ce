"""Privacy: erasure, pseudonymous ids, differentially private training and counts, and
federated training (each in its own module; the optional ones import their libraries
lazily)."""

# Reports and the dashboard hide rows about fewer distinct users than this (`--min-group-size`);
# here rather than in `groups` so the CLI can show it as a default without importing Ibis.
DEFAULT_MIN_GROUP_SIZE = 5
