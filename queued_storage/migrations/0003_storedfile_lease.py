from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('queued_storage', '0002_storedfile_outbox'),
    ]

    operations = [
        migrations.AddField(
            model_name='storedfile',
            name='lease_owner',
            field=models.CharField(blank=True, default='', max_length=255, verbose_name='lease owner'),
        ),
        migrations.AddField(
            model_name='storedfile',
            name='lease_expires',
            field=models.DateTimeField(blank=True, null=True, verbose_name='lease expires'),
        ),
        migrations.AddField(
            model_name='storedfile',
            name='next_attempt',
            field=models.DateTimeField(blank=True, null=True, verbose_name='next attempt'),
        ),
    ]
