"""Lightning callbacks of our own (the standard ones come from Lightning itself)."""
