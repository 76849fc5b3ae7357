"""Model plugins: one file per architecture family, each importing its framework lazily."""
