"""Plain nn.Modules, free of training logic."""
