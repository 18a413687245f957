"""Transparency-log appends on real PostgreSQL: one appender, and 8 concurrent appenders.

Creates a scratch database next to DATABASE_URL's, migrates it, measures, and drops it.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import dj_database_url
import psycopg


def run(entries: int = 3000, threads: int = 8) -> dict[str, Any]:
    base = dj_database_url.parse(os.environ.get(
        "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    name = f"hallmark_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(host=base["HOST"], port=base["PORT"] or 5432, user=base["USER"],
                            dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        os.environ["DATABASE_URL"] = f"postgres://{base['USER']}@{base['HOST']}:{base['PORT'] or 5432}/{name}"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings")
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from registry import translog
        from verifier.evidence import logentry

        call_command("migrate", verbosity=0)

        def entry(i: int) -> bytes:
            return logentry.log_entry("correction", corrects=i, envelope_sha256="ab" * 32)

        t0 = time.perf_counter()
        for i in range(entries):
            translog.append("correction", entry(i))
        single = entries / (time.perf_counter() - t0)

        per = entries // threads

        def appender(k: int) -> None:
            for i in range(per):
                translog.append("correction", entry(k * per + i))
            connection.close()

        workers = [threading.Thread(target=appender, args=(k,)) for k in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        concurrent = per * threads / (time.perf_counter() - t0)
        size = translog.size()
        t0 = time.perf_counter()
        for i in range(0, size, max(1, size // 200)):
            translog.inclusion(i, size)
        proof_ms = (time.perf_counter() - t0) / len(range(0, size, max(1, size // 200))) * 1e3
        connection.close()
        return {"entries_per_second_one_appender": round(single), f"entries_per_second_{threads}_appenders":
                round(concurrent), "log_size": size, "inclusion_proof_ms_from_db": round(proof_ms, 3)}
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
