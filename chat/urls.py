from django.urls import path

from . import downloads, views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("rooms/<slug:slug>/", views.chat_page, name="chat-room"),
    # Uploaded files: membership is checked on every request (chat/downloads.py).
    path("files/<int:attachment_id>/thumbnail/", downloads.file_thumbnail, name="chat-file-thumbnail"),
    path("files/<int:attachment_id>/<str:name>", downloads.file_download, name="chat-file"),
    path("files/s/<str:token>/<str:name>", downloads.file_signed, name="chat-file-signed"),
]
