"""vaxbot: the electronic vaccination certificate assistant."""
