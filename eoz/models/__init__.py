"""Neural network definitions (pure nn.Modules; no I/O, no entropy coding)."""
