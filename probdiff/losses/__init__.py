"""Training losses derived from the process."""
