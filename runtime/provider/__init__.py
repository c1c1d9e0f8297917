"""Provider: how replicas of functions are created, found, paused and removed (Docker or fake)."""
