"""The labeling pages: classes, imports (uploads, zips, URL lists) and the unlabeled queue.

One blueprint, made in blueprint.py; each module here adds its views to it, so importing them
is what puts their routes on it. They import the blueprint, never this package: no cycle.
"""
from webapp.web.views.label import classes, imports, queue
from webapp.web.views.label.blueprint import bp

__all__ = ["bp", "classes", "imports", "queue"]
