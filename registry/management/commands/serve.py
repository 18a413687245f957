"""`python manage.py serve`: the embedded registry (Redis + celery workers + web) until Ctrl-C."""
from __future__ import annotations

import contextlib
import ipaddress
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from registry.embedded import Embedded


class Command(BaseCommand):
    help = "Run the embedded registry: a bundled Redis server, celery workers and gunicorn."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--workers", type=int, default=2, help="celery worker processes")
        parser.add_argument("--host", default="127.0.0.1",
                            help="address the web server binds (default: loopback only)")
        parser.add_argument("--port", type=int, default=8000, help="web server port (0: any free)")

    def handle(self, *args: object, **options: object) -> None:
        host, port = str(options["host"]), int(options["port"])  # type: ignore[call-overload]
        if settings.DEBUG and not _loopback(host):
            raise CommandError(
                f"refusing to serve with DJANGO_DEBUG on at {host}: debug pages show settings "
                "and source code to anyone who can reach them; unset DJANGO_DEBUG or bind "
                "127.0.0.1")
        if port and not 0 < port < 65536:
            raise CommandError(f"--port {port} is not a TCP port; give 1-65535 (0: any free port)")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with Embedded(settings.DATA_DIR, workers=int(options["workers"]),  # type: ignore[call-overload]
                      host=host, port=port or None) as e:
            self.stdout.write(f"Hallmark registry at {e.url} (data in {settings.DATA_DIR}); Ctrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
        self.stdout.write("stopped")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
