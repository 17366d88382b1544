"""RPMs: repodata, rpm-md formats, version order, modularity, the resolver,
signatures, the crypto policy, the yum repo writer."""
