"""A/B rollout: the schema of ``rollout.yaml`` (shared with the search service) and its writer."""
