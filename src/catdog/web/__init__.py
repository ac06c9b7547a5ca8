"""The web service: app factory, routes, batching, templates and static files (calls the ML core)."""

# Where every worker process's Prometheus samples meet. prometheus_client reads the variable
# when it is first imported, so `catdog serve` sets it before anything imports catdog.web.metrics.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
