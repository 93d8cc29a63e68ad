"""Utilities below every layer: one-line argument checks, atomic file writes, seeding, images."""
