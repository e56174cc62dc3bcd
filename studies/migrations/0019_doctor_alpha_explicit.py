"""Doctor policies saved without "alpha" decoded with α = 1; the default is now α = 1 − Σβ
(studies/steps/doctor_spec.py). Writing α = 1 into those policies' params keeps them decoding
exactly as before (and their pools' recorded α matching, so nothing is resampled)."""

from django.db import migrations


def write_alpha_one(apps, schema_editor):
    Policy = apps.get_model("studies", "Policy")
    for policy in Policy.objects.filter(kind="doctor"):
        params = policy.params if isinstance(policy.params, dict) else {}
        if "alpha" not in params:
            policy.params = {**params, "alpha": 1.0}
            policy.save(update_fields=["params"])


class Migration(migrations.Migration):

    dependencies = [
        ("studies", "0018_allocation"),
    ]

    operations = [
        migrations.RunPython(write_alpha_one, migrations.RunPython.noop),
    ]
