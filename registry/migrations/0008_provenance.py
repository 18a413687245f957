# The suspect's declared provenance (model-signing bundle, ONNX graph signature), checked by the
# fetch and signed in the report beside the verdict.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0007_scan_index'),
    ]

    operations = [
        migrations.AddField(
            model_name='verification',
            name='provenance',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='verification',
            name='publisher_keys',
            field=models.JSONField(blank=True, default=list),
        ),
    ]
