"""CLI commands, one module per family; each is thin and calls into the library."""
