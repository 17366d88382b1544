"""What a build starts from: the recipe, the mirror preset, the lock."""
