"""Storage: the object store, the JSON record IO manager and the warehouse clients."""
