from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.utils.translation import gettext_lazy as _

from .models import User


class SignupForm(UserCreationForm):
    display_name = forms.CharField(label=_("Display name"), max_length=80, required=False)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "display_name")
