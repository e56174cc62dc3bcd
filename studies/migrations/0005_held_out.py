# Held-out responses (issue 11): a study's share of each pool kept out of fitting, the fits'
# certificate on the pool and prediction on the held-out responses; best-of-N's new label.

import studies.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('studies', '0004_doctor'),
    ]

    operations = [
        migrations.AddField(
            model_name='policyfit',
            name='held_out_robust_win_rate',
            field=models.FloatField(blank=True, help_text='The prediction for a fresh opponent: robust win rate against the worst m held-out responses (empty when nothing was held out).', null=True),
        ),
        migrations.AddField(
            model_name='policyfit',
            name='pool_robust_win_rate',
            field=models.FloatField(blank=True, help_text='The certificate: robust win rate against the worst m responses of the fitted pool.', null=True),
        ),
        migrations.AddField(
            model_name='study',
            name='held_out_fraction',
            field=models.FloatField(default=0.25, help_text="Share of each prompt's pool kept out of fitting (0 to below 1), so the results can say how a fitted policy fares against responses it never saw. Pools of fewer than 4 distinct texts hold none out.", validators=[studies.models._validate_held_out_fraction]),
        ),
        migrations.AlterField(
            model_name='policy',
            name='kind',
            field=models.CharField(choices=[('sample', 'Plain sampling (the reference μ)'), ('best_of_n', "Best-of-N by the population's mean quantile"), ('nlhf', 'NLHF (maximal lottery)'), ('ctrl', 'CTRL (InfAlign)'), ('multiplayer', 'Multi-player equilibrium (U-alignment)'), ('doctor', 'LLMdoctor guided decoding'), ('checkpoint', 'Checkpoint (its own generator)')], max_length=32),
        ),
        migrations.AlterField(
            model_name='policyfit',
            name='predicted_robust_win_rate',
            field=models.FloatField(blank=True, help_text='Robust win rate against the worst m-output opponent over every candidate of the prompt (fitted and held out): the adversary that the items field.', null=True),
        ),
        migrations.AddConstraint(
            model_name='study',
            constraint=models.CheckConstraint(condition=models.Q(('held_out_fraction__gte', 0), ('held_out_fraction__lt', 1)), name='study_held_out_fraction_unit'),
        ),
    ]
