from django.urls import path

from . import views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("rooms/<slug:slug>/", views.chat_page, name="chat-room"),
]
