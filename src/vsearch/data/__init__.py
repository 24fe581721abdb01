"""Data: manifests, datasets, transforms and the generated street-to-shop benchmark."""
