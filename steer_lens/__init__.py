"""steer-lens."""
