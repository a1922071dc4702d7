"""See and review: the health overview, the map projection, similar samples, reviewer decisions."""
