from typing import Any

from django import forms
from django.conf import settings


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts one or several files and cleans each one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        items = list(data) if isinstance(data, (list, tuple)) else [data]
        # No file at all is one missing file, which a required field refuses.
        clean_one = super().clean
        files = [clean_one(item, initial) for item in items or [None]]
        limit = settings.EXAMPLE_MAX_UPLOAD_BYTES
        for item in files:
            if item is not None and item.size > limit:
                raise forms.ValidationError(
                    f"{item.name} is larger than {limit} bytes.", code="too_large"
                )
        return files


class UploadForm(forms.Form):
    files = MultipleFileField(label="Files")
