"""`python manage.py serve`: the embedded registry (Redis + celery workers + web) until Ctrl-C."""
from __future__ import annotations

import contextlib
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from registry.embedded import Embedded


class Command(BaseCommand):
    help = "Run the embedded registry: a bundled Redis server, celery workers and gunicorn."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--workers", type=int, default=2, help="celery worker processes")

    def handle(self, *args: object, **options: object) -> None:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with Embedded(settings.DATA_DIR, workers=int(options["workers"])) as e:  # type: ignore[arg-type]
            self.stdout.write(f"Hallmark registry at {e.url} (data in {settings.DATA_DIR}); Ctrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
        self.stdout.write("stopped")
