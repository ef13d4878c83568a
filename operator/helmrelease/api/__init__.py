"""Pure models of the HelmRelease API (helm.fluxcd.io/v1): spec, defaults, status. No I/O."""
