"""The transparency log on real PostgreSQL: appends (one appender, 8 concurrent appender processes,
batches) and inclusion/consistency proofs served from the database at 1,000,000 entries.

Creates a scratch database next to DATABASE_URL's, migrates it, measures, and drops it. For the
proofs, the node table of a 1,000,000-entry log is computed in memory and loaded with COPY
(appending a million entries one by one would take the benchmark's whole budget).
"""
from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from typing import Any

import dj_database_url
import psycopg


def run(entries: int = 3000, appenders: int = 8, million: int = 1_000_000) -> dict[str, Any]:
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

        per = entries // appenders
        connection.close()  # each forked appender opens its own connection
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_appender, args=(k * per, per)) for k in range(appenders)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        concurrent = per * appenders / (time.perf_counter() - t0)
        assert all(p.exitcode == 0 for p in procs) and translog.size() == entries + per * appenders

        t0 = time.perf_counter()
        for _ in range(10):
            translog.append_many("correction", [entry(i) for i in range(500)])
        batched = 5000 / (time.perf_counter() - t0)
        connection.close()
        return {"entries_per_second_one_appender": round(single),
                f"entries_per_second_{appenders}_appender_processes": round(concurrent),
                "entries_per_second_batches_of_500": round(batched),
                "proofs_from_db": _proofs_at_scale(million, connection)}
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _appender(start: int, count: int) -> None:
    """One appender process (the registry runs many web and worker processes, not threads)."""
    from django.db import connection

    from registry import translog
    from verifier.evidence import logentry

    for i in range(start, start + count):
        translog.append("correction", logentry.log_entry("correction", corrects=i,
                                                         envelope_sha256="ab" * 32))
    connection.close()


def _proofs_at_scale(n: int, connection: Any, samples: int = 200) -> dict[str, Any]:
    """Load the nodes of an n-entry log with COPY, then time proofs served from the database."""
    import random
    import statistics

    from bench.bench_evidence import LevelTable
    from registry import translog
    from registry.models import LogHead, MerkleNode
    from verifier.evidence import merkle

    table = LevelTable()
    for i in range(n):
        table.append(b"entry %d" % i)
    MerkleNode.objects.all().delete()
    with connection.cursor() as cur, cur.connection.cursor().copy(
            f"COPY {MerkleNode._meta.db_table} (level, index, hash) FROM STDIN") as copy:
        for level, hashes in enumerate(table.levels):
            for index, h in enumerate(hashes):
                copy.write_row((level, index, h))
    LogHead.objects.update_or_create(pk=1, defaults={"size": n})
    with connection.cursor() as cur:
        cur.execute(f"ANALYZE {MerkleNode._meta.db_table}")
    rng = random.Random(0)
    root = merkle.root_at(n, table.get_nodes)
    incl, cons = [], []
    for _ in range(samples):
        i = rng.randrange(n)
        t0 = time.perf_counter()
        proof = translog.inclusion(i, n)
        incl.append(time.perf_counter() - t0)
        assert merkle.verify_inclusion(table.levels[0][i], i, n, proof, root)
        old = rng.randrange(1, n)
        t0 = time.perf_counter()
        proof = translog.consistency(old, n)
        cons.append(time.perf_counter() - t0)
        assert merkle.verify_consistency(old, n, merkle.root_at(old, table.get_nodes), root, proof)

    def ms(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"median_ms": round(statistics.median(xs) * 1e3, 3),
                "p99_ms": round(xs[int(0.99 * (len(xs) - 1))] * 1e3, 3)}

    return {"entries": n, "nodes": sum(len(h) for h in table.levels),
            "inclusion_proof": ms(incl), "consistency_proof": ms(cons)}
