"""Long work in its own process: the runner, and the job kinds as thin adapters."""
