from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queued_storage", "0004_storedfile_local_deleted"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="storedfile",
            index=models.Index(
                condition=models.Q(("outbox", True)),
                fields=["updated"],
                name="queued_storage_outbox",
            ),
        ),
    ]
