from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from chat import health

urlpatterns = [
    # For load balancers, orchestrators and Prometheus (chat/health.py).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    # The language switcher posts to set_language; scripts get their strings from jsi18n.
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("api/", include("chat.api.urls")),
    path("", include("chat.urls")),
]
