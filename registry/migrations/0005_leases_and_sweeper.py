# Leases, re-drive times and the sweeper's indexes (issue 10).

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0004_forgery_floor_and_reference_panel'),
    ]

    operations = [
        migrations.AddField(
            model_name='checkresult',
            name='driven_at',
            field=models.DateTimeField(default=django.utils.timezone.now, null=True),
        ),
        migrations.AddField(
            model_name='checkresult',
            name='lease_until',
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name='verification',
            name='driven_at',
            field=models.DateTimeField(default=django.utils.timezone.now, null=True),
        ),
        migrations.AddField(
            model_name='verification',
            name='lease_until',
            field=models.DateTimeField(null=True),
        ),
        migrations.AlterField(
            model_name='checkresult',
            name='status',
            field=models.CharField(choices=[('pending', 'pending'), ('running', 'running'), ('checked', 'checked'), ('not applicable', 'not applicable'), ('error', 'error')], default='pending', max_length=16),
        ),
        migrations.AddIndex(
            model_name='checkresult',
            index=models.Index(condition=models.Q(('status__in', ('pending', 'running'))), fields=['status', 'driven_at'], name='check_sweep'),
        ),
        migrations.AddIndex(
            model_name='verification',
            index=models.Index(condition=models.Q(('status__in', ('queued', 'fetching', 'checking', 'finalizing'))), fields=['status', 'driven_at'], name='verification_sweep'),
        ),
    ]
