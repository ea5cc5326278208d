"""One module per dashboard page; each only lays out widgets and charts."""
