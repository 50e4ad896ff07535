"""The WSGI entry point: the one module-level app (gunicorn, flask --app wsgi)."""
from webapp.app import create_app

app = create_app()
