# Issue 25: a rejection carries its reason, as Prolific asks for one with every rejection; it is
# exported with the approve/reject list. Numbered 0014 to leave room for the branches merged beside it.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0008_participant_done_counters"),
    ]

    operations = [
        migrations.AddField(
            model_name="participant",
            name="review_reason",
            field=models.CharField(blank=True, max_length=500),
        ),
    ]
