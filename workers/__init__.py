"""Celery tasks and the fetcher. `celery -A workers worker` finds the app in workers/celery.py."""
