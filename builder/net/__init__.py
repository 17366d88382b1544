"""The network: the one HTTP transport and the pinned-cache adapter."""
