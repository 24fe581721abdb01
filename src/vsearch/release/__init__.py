"""Release lifecycle: review -> A/B ramp -> promote or roll back (`vsearch.release.lifecycle`)."""
