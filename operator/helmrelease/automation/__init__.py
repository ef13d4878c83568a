"""Image automation: scan registries for the images found in HelmReleases and update tags per policy."""
