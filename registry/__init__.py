"""Hallmark's registry: the Django project and app that is the system of record."""
