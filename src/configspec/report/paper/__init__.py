"""Reproduce the ConfigSpec paper's analysis from imported profiles, and stress it."""
