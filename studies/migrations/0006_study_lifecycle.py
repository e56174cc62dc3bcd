# The study's lifecycle and seats (issue 12 part A): a paused status; participants who time out
# or return (freeing their seat); the researcher's review verdict; each participant's last activity.

import django.utils.timezone
from django.db import migrations, models
from django.db.models import Max, OuterRef, Subquery
from django.db.models.functions import Coalesce, Greatest


def fill_last_active(apps, schema_editor):
    """Existing participants were last active at their latest step: joining, consent or a task."""
    Participant = apps.get_model("studies", "Participant")
    Assignment = apps.get_model("studies", "Assignment")
    latest = (
        Assignment.objects.filter(participant=OuterRef("pk")).values("participant")
        .annotate(at=Max(Coalesce("completed_at", "assigned_at"))).values("at")
    )
    Participant.objects.update(last_active_at=Greatest(
        "created_at", Coalesce("consent_at", "created_at"), Coalesce(Subquery(latest), "created_at")
    ))


class Migration(migrations.Migration):

    dependencies = [
        ('studies', '0005_held_out'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='study',
            name='study_status_valid',
        ),
        migrations.AddField(
            model_name='participant',
            name='last_active_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(fill_last_active, migrations.RunPython.noop),
        migrations.AddField(
            model_name='participant',
            name='review_status',
            field=models.CharField(choices=[('pending', 'Not reviewed'), ('approved', 'Approved'), ('rejected', 'Rejected')], default='pending', max_length=16),
        ),
        migrations.AlterField(
            model_name='participant',
            name='status',
            field=models.CharField(choices=[('joined', 'Joined'), ('consented', 'Consented'), ('active', 'Annotating'), ('completed', 'Completed'), ('ended', 'Ended (failed attention checks)'), ('declined', 'Declined consent'), ('screened_out', 'Ended (failed the comprehension check twice)'), ('timed_out', 'Timed out (inactive; seat freed)'), ('returned', 'Returned (on Prolific; seat freed)')], default='joined', max_length=16),
        ),
        migrations.AlterField(
            model_name='study',
            name='status',
            field=models.CharField(choices=[('draft', 'Draft'), ('preparing', 'Preparing'), ('ready', 'Ready'), ('live', 'Live'), ('paused', 'Paused'), ('closed', 'Closed')], default='draft', max_length=16),
        ),
        migrations.AddIndex(
            model_name='participant',
            index=models.Index(fields=['study', 'status', 'last_active_at'], name='participant_activity'),
        ),
        migrations.AddConstraint(
            model_name='participant',
            constraint=models.CheckConstraint(condition=models.Q(('review_status__in', ['pending', 'approved', 'rejected'])), name='participant_review_valid'),
        ),
        migrations.AddConstraint(
            model_name='study',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['draft', 'preparing', 'ready', 'live', 'paused', 'closed'])), name='study_status_valid'),
        ),
    ]
