from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queued_storage", "0003_storedfile_lease"),
    ]

    operations = [
        migrations.AddField(
            model_name="storedfile",
            name="local_deleted",
            field=models.DateTimeField(
                blank=True, null=True, verbose_name="local copy removed"
            ),
        ),
        migrations.AddIndex(
            model_name="storedfile",
            index=models.Index(fields=["storage", "id"], name="queued_storage_pages"),
        ),
        migrations.AddIndex(
            model_name="storedfile",
            index=models.Index(
                fields=["storage", "transferred"], name="queued_storage_transferred"
            ),
        ),
    ]
