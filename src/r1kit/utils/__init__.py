"""Small shared helpers (device and rank handling)."""
