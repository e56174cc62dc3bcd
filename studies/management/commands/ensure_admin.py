"""Create a superuser when there is none, and say how to log in."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


def ensure_admin(username: str = "admin") -> tuple[str, str | None]:
    """Return (username, password); the password is None when an admin existed before us
    and we don't know it (its first password, if we made it, is kept in var/)."""
    User = get_user_model()
    credentials = settings.VAR_DIR / "admin-credentials.txt"
    if User.objects.filter(is_superuser=True).exists():
        if credentials.exists():
            name, _, password = credentials.read_text().strip().partition(":")
            if User.objects.filter(username=name, is_superuser=True).exists():
                return name, password
        return str(User.objects.filter(is_superuser=True).values_list("username", flat=True).first()), None
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.touch(mode=0o600)
    credentials.write_text(f"{username}:{password}\n")
    return username, password


class Command(BaseCommand):
    help = "Create an admin user when there is none, and print the credentials."

    def handle(self, *args, **options) -> None:
        username, password = ensure_admin()
        if password is None:
            self.stdout.write(f"Admin user: {username} (password unknown here; `manage.py changepassword {username}`)")
        else:
            self.stdout.write(f"Admin user: {username}  password: {password}")
