from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("form/", views.message_form, name="form"),
    path("upload/", views.upload, name="upload"),
    path("report.csv", views.report_csv, name="report-csv"),
    path("echo/", views.echo, name="echo"),
    path("boom/", views.boom, name="boom"),
]
