"""A small Django project the Django integration is tested on (in process and under gunicorn)."""
