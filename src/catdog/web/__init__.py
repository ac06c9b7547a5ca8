"""The web service: app factory, routes, batching, templates and static files (calls the ML core)."""
