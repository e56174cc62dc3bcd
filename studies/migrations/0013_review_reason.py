# Issue 25: a rejection carries its reason, as Prolific asks for one with every rejection; it is
# exported with the approve/reject list. And "Allow cant decide" reads as the button it shows. Numbered 0014 to leave room for the branches merged beside it.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0012_invites"),
    ]

    operations = [
        migrations.AddField(
            model_name="participant",
            name="review_reason",
            field=models.CharField(blank=True, max_length=500),
        ),
        migrations.AlterField(
            model_name="study",
            name="allow_cant_decide",
            field=models.BooleanField(
                default=False,
                help_text="Show an “I can't decide” button beside the picks (attention checks too); how it counts is set below.",
                verbose_name="allow “I can't decide”",
            ),
        ),
    ]
