from django.db import migrations, models


class Migration(migrations.Migration):
    """Hub suspects: repo, pinned commit sha and the files used (docs/ingestion.md)."""

    dependencies = [
        ('registry', '0006_witnesses_owners_countersignatures'),
    ]

    operations = [
        migrations.AddField(
            model_name='suspect',
            name='hub_repo',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name='suspect',
            name='hub_commit',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='suspect',
            name='hub_files',
            field=models.JSONField(blank=True, default=list),
        ),
    ]
