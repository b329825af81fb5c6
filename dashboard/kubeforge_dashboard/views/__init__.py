"""Pure view models, one module per page: typed API models in, rows and texts out."""
