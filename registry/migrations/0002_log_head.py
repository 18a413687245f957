from django.db import migrations


def create_head(apps, schema_editor):
    apps.get_model("registry", "LogHead").objects.get_or_create(id=1, defaults={"size": 0})


class Migration(migrations.Migration):
    """The single LogHead row that every log append locks."""

    dependencies = [("registry", "0001_initial")]
    operations = [migrations.RunPython(create_head, migrations.RunPython.noop)]
