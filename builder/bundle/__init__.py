"""The bundle: stage, pack, sign, lint, warm rebuilds, and reading a built bundle back."""
