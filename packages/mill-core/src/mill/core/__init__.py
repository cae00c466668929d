"""Mill core: the typed model, spec registry, backends interface, metrics and results store."""
