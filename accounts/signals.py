"""Account events that must reach open sockets: they end the user's sessions on the socket too."""

from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from chat import broadcast
from chat.protocol import CLOSE_AUTH_REQUIRED, CLOSE_FORBIDDEN

from .models import User


@receiver(user_logged_out)
def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        broadcast.close_user_sockets_on_commit(user_id=user.pk, code=CLOSE_AUTH_REQUIRED)


@receiver(pre_save, sender=User)
def remember_active_flag(sender, instance: User, **kwargs) -> None:
    if instance.pk:
        instance._was_active = User.objects.filter(pk=instance.pk).values_list("is_active", flat=True).first()


@receiver(post_save, sender=User)
def close_sockets_on_deactivation_or_password_change(sender, instance: User, created: bool, **kwargs) -> None:
    password_changed = getattr(instance, "_password_changed", False)
    instance._password_changed = False  # a later save of the same object is not a change
    if created:
        return
    if getattr(instance, "_was_active", False) and not instance.is_active:
        broadcast.close_user_sockets_on_commit(user_id=instance.pk, code=CLOSE_FORBIDDEN)
    elif password_changed:
        broadcast.close_user_sockets_on_commit(user_id=instance.pk, code=CLOSE_AUTH_REQUIRED)
