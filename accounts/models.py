from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """A chat user. ``display_name`` is what others see; ``username`` is the stable handle."""

    display_name = models.CharField(_("display name"), max_length=80, blank=True)

    def set_password(self, raw_password: str | None) -> None:
        super().set_password(raw_password)
        # Read by the post_save receiver: a password change ends every open socket.
        self._password_changed = True

    @property
    def shown_name(self) -> str:
        return self.display_name or self.username
