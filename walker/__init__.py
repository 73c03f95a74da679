"""walker."""
