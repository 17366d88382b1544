"""Container images: the OCI distribution client, platforms, media types, the
image archive writer, the kubeadm image table."""
