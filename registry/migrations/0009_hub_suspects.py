import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """Hub suspects: repo, pinned commit sha, the files used, and the byte ranges read
    (docs/ingestion.md)."""

    dependencies = [
        ('registry', '0008_provenance'),
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
        migrations.CreateModel(
            name='PinnedRange',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('file', models.CharField(max_length=1000)),
                ('begin', models.BigIntegerField()),
                ('end', models.BigIntegerField()),
                ('sha256', models.CharField(max_length=64)),
                ('pinned_at', models.DateTimeField(auto_now_add=True)),
                ('suspect', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='pinned_ranges', to='registry.suspect')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('suspect', 'file', 'begin', 'end'), name='one_pin_per_range')],
            },
        ),
    ]
