"""The blueprints, one module each, named for the pages they serve."""
