"""Jobs: the runner and its leases, cancellation, the stuck-work sweep, handlers, pruning."""
