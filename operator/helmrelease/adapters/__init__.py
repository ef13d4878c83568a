"""I/O at the edges: helm, Kubernetes API, OCI registries, git. Each converts library errors to our own once."""
