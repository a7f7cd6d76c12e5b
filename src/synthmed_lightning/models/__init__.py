"""LightningModules (training logic); plain networks live in `models/components`."""
