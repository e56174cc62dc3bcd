# Issue 14: each participant's completed tasks (and the attention checks among them) kept on their
# row by the pick that completes each, so the annotator's path reads two columns instead of
# counting the participant's assignments. Existing participants get them counted from their
# completed assignments.

from django.db import migrations, models
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce


def count_done(apps, schema_editor):
    Participant = apps.get_model("studies", "Participant")
    Assignment = apps.get_model("studies", "Assignment")
    completed = (
        Assignment.objects.filter(participant=OuterRef("pk"), status="completed")
        .order_by().values("participant")
        .annotate(tasks=Count("pk"), checks=Count("pk", filter=Q(item__is_attention_check=True)))
    )
    Participant.objects.update(
        tasks_done=Coalesce(Subquery(completed.values("tasks")), 0),
        attention_checks_done=Coalesce(Subquery(completed.values("checks")), 0),
    )


class Migration(migrations.Migration):

    dependencies = [
        ("studies", "0007_counters"),
    ]

    operations = [
        migrations.AddField(
            model_name="participant",
            name="tasks_done",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="participant",
            name="attention_checks_done",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(count_done, migrations.RunPython.noop),
    ]
