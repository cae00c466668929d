"""Mill command line."""
