"""One module per resource; each holds only the routes of that resource."""
