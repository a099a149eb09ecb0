"""Wire formats shared by the host drivers and the simulated instruments (pure, no I/O)."""
