"""Reports keep the bytes they serve (document + strong ETag); existing reports are backfilled.

The backfill renders each report with the live `registry.reporting.store_document` (the
document is built from many tables, and must be byte-identical to what the API serves); on a
fresh database there are no reports and it does nothing. A report it cannot render stays
empty and is rendered on its first GET.
"""
from django.db import migrations, models


def backfill(apps, schema_editor):  # type: ignore[no-untyped-def]
    from registry import reporting
    from registry.models import Report

    # only the columns rendering reads, so a later migration adding a Report column does not
    # break this one
    todo = (Report.objects.filter(document=None).exclude(log_index=None)
            .only("pk", "public_id", "envelope", "log_index"))
    for report in todo.iterator():
        reporting.store_document(report)


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0009_hub_suspects'),
    ]

    operations = [
        migrations.AddField(
            model_name='report',
            name='document',
            field=models.BinaryField(null=True),
        ),
        migrations.AddField(
            model_name='report',
            name='etag',
            field=models.CharField(blank=True, max_length=70),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
