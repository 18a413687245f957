"""Re-index uchida commitments on a canonical host (invariant, moments): weights only.

Their test reads hidden layers of any width (dummy units are removed before the host is
computed), so the host shapes recorded by 0007 would wrongly leave a widened copy out of a scan.
"""
from django.db import migrations


def reindex(apps, schema_editor):  # type: ignore[no-untyped-def]
    from verifier import scan

    Commitment = apps.get_model("registry", "Commitment")
    for c in Commitment.objects.filter(scheme="uchida").only("pk", "public_params").iterator():
        try:  # the same rule as at upload; keys on the plain host keep their shapes
            r = scan.requirement("uchida", c.public_params or {})
        except scan.ScanError:
            continue  # as 0007: params it cannot read stay indexed as they are
        Commitment.objects.filter(pk=c.pk).update(
            needs=r.access, index_shape=r.index_shape, requirement=r.to_dict())


class Migration(migrations.Migration):
    dependencies = [("registry", "0010_report_bytes")]
    operations = [migrations.RunPython(reindex, migrations.RunPython.noop)]
