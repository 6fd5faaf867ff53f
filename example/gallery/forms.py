from typing import Any

from django import forms


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
        return [clean_one(item, initial) for item in items or [None]]


class UploadForm(forms.Form):
    files = MultipleFileField(label="Files")
