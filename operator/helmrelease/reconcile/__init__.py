"""HelmRelease reconciliation: pure decisions (next action, values, conditions) and the service that runs them."""
