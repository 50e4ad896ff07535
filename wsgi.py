"""The WSGI entry point: the one module-level app (gunicorn, flask --app wsgi)."""
from webapp import create_app

app = create_app()
