"""The data layer: readers with geometry, dataset layouts, splits, transforms, prompts, batches, cache, checks."""
