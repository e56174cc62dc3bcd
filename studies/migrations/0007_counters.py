# Issue 14: counters and indexes that keep the annotator's path at a constant cost, the cached
# Markdown of each candidate, and the results snapshot the results page is served from.
# Existing rows get their counters from their live assignments, and each item its own shuffle key
# (AddField evaluates a callable default once for all rows).

import secrets
from collections import Counter, defaultdict

import django.db.models.deletion
import studies.models
from django.db import migrations, models

LIVE = ("assigned", "completed")


def fill_counters(apps, schema_editor):
    ComparisonItem = apps.get_model("studies", "ComparisonItem")
    Assignment = apps.get_model("studies", "Assignment")
    live: Counter[int] = Counter()
    rotations: dict[int, Counter[str]] = defaultdict(Counter)
    for item_id, order in Assignment.objects.filter(status__in=LIVE).values_list("item_id", "display_order").iterator():
        live[item_id] += 1
        if order:
            rotations[item_id][str(order[0])] += 1
    batch = []
    for item in ComparisonItem.objects.only("pk").iterator():
        item.spread = secrets.randbits(31)
        item.live_assignments = live[item.pk]
        item.rotation_use = dict(rotations[item.pk])
        batch.append(item)
        if len(batch) == 1000:
            ComparisonItem.objects.bulk_update(batch, ["spread", "live_assignments", "rotation_use"])
            batch = []
    ComparisonItem.objects.bulk_update(batch, ["spread", "live_assignments", "rotation_use"])


class Migration(migrations.Migration):

    dependencies = [
        ('studies', '0006_study_lifecycle'),
    ]

    operations = [
        migrations.CreateModel(
            name='ResultsSnapshot',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('origin', models.CharField(max_length=16)),
                ('payload', models.BinaryField(blank=True, help_text='The pickled StudyResults.', null=True)),
                ('judgment_watermark', models.BigIntegerField(blank=True, null=True)),
                ('study_updated_at', models.DateTimeField(blank=True, null=True)),
                ('computed_at', models.DateTimeField(blank=True, null=True)),
                ('compute_seconds', models.FloatField(blank=True, null=True)),
                ('refresh_requested_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.AddField(
            model_name='candidate',
            name='text_html',
            field=models.TextField(blank=True, editable=False),
        ),
        migrations.AddField(
            model_name='comparisonitem',
            name='live_assignments',
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name='comparisonitem',
            name='rotation_use',
            field=models.JSONField(blank=True, default=dict, editable=False),
        ),
        migrations.AddField(
            model_name='comparisonitem',
            name='spread',
            field=models.PositiveIntegerField(default=studies.models.new_spread, editable=False),
        ),
        migrations.AddIndex(
            model_name='assignment',
            index=models.Index(condition=models.Q(('status', 'assigned')), fields=['participant'], name='assignment_open'),
        ),
        migrations.AddIndex(
            model_name='assignment',
            index=models.Index(condition=models.Q(('status', 'assigned')), fields=['assigned_at'], name='assignment_open_since'),
        ),
        migrations.AddIndex(
            model_name='comparisonitem',
            index=models.Index(condition=models.Q(('needs_judgment', True)), fields=['study', 'is_attention_check', 'live_assignments', 'spread'], name='item_open_slots'),
        ),
        migrations.AddIndex(
            model_name='participant',
            index=models.Index(condition=models.Q(('consent_at__isnull', False)), fields=['study', 'status'], name='participant_seated'),
        ),
        migrations.AddField(
            model_name='resultssnapshot',
            name='study',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='results_snapshots', to='studies.study'),
        ),
        migrations.AddConstraint(
            model_name='resultssnapshot',
            constraint=models.UniqueConstraint(fields=('study', 'origin'), name='results_snapshot_unique'),
        ),
        migrations.RunPython(fill_counters, migrations.RunPython.noop),
    ]
