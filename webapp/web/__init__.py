"""The HTTP and terminal edge: blueprints, auth, errors, metrics, resources, the CLI."""
