# Participant identity (issue 13): the resume-link secret, the join rate limit's client key,
# and prompt imports run as background jobs (their upload in Job.payload).

import studies.models
from django.db import migrations, models


def fill_resume_tokens(apps, schema_editor):
    Participant = apps.get_model("studies", "Participant")
    for participant in Participant.objects.filter(resume_token__isnull=True).only("pk").iterator():
        Participant.objects.filter(pk=participant.pk).update(resume_token=studies.models.new_token())


class Migration(migrations.Migration):

    dependencies = [
        ('studies', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='payload',
            field=models.BinaryField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='participant',
            name='client_key',
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        # A unique secret per existing row: add the column empty, fill it, then make it unique.
        migrations.AddField(
            model_name='participant',
            name='resume_token',
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(fill_resume_tokens, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='participant',
            name='resume_token',
            field=models.CharField(default=studies.models.new_token, editable=False, max_length=64, unique=True),
        ),
        migrations.AlterField(
            model_name='job',
            name='kind',
            field=models.CharField(choices=[('ping', 'Worker check'), ('prepare', 'Prepare study'), ('generate', 'Generate candidates'), ('populate', 'Build populations'), ('fit', 'Fit policies'), ('build_items', 'Build comparison items'), ('simulate', 'Simulated annotators'), ('import_prompts', 'Import prompts'), ('export', 'Export')], max_length=32),
        ),
        migrations.AddIndex(
            model_name='participant',
            index=models.Index(fields=['study', 'client_key', 'created_at'], name='participant_join_rate'),
        ),
    ]
