"""``/api/`` (PROTOCOL section 8), OpenAPI schema and docs included."""

from django.urls import include, path, re_path
from rest_framework.routers import SimpleRouter

from . import docs, views

router = SimpleRouter()
router.register("rooms", views.RoomViewSet, basename="api-room")
router.register(r"rooms/(?P<slug>[-\w]+)/messages", views.MessageViewSet, basename="api-room-message")
router.register("users", views.UserViewSet, basename="api-user")

urlpatterns = [
    path("", include(router.urls)),
    path("messages/<int:id>/report/", views.ReportView.as_view(), name="api-message-report"),
    path("search/", views.SearchView.as_view(), name="api-search"),
    path("ws-ticket/", views.WsTicketView.as_view(), name="api-ws-ticket"),
    path("token/", views.TokenView.as_view(), name="api-token"),
    path("schema/", docs.SchemaView.as_view(), name="api-schema"),
    path("docs/", docs.SwaggerDocsView.as_view(url_name="api-schema"), name="api-docs"),
    # Anything else under /api/ ending in a slash answers in the API's error shape, not with the
    # site's HTML page (paths without the slash still get CommonMiddleware's redirect first).
    re_path(r"^.*/$", docs.not_found, name="api-not-found"),
]
