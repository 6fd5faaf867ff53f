from django.urls import path

from . import views

app_name = "gallery"

urlpatterns = [
    path("", views.index, name="index"),
    path("api/uploads/", views.uploads_json, name="uploads"),
    path("uploads/<int:pk>/retry/", views.retry, name="retry"),
]
