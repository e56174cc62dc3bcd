"""What the admin's modules share: read-only admin classes and the rounding of figures."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest


def rounded(value: float | None, digits: int = 3) -> str:
    """A float as the admin shows it: `digits` decimals, "–" for none (raw floats read 0.30000000000000004)."""
    return "–" if value is None else f"{value:.{digits}f}"


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: these rows are written by the pipeline and by annotators."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
