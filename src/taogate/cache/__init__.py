"""The cache tiers: L1 in process memory (and, with Redis, an L2 shared by replicas)."""
