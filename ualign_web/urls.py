from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("studies.urls")),
]

# /healthz and /readyz are answered by ualign_web.health.HealthProbeMiddleware, before routing.
handler500 = "ualign_web.errors.server_error"
