"""``python manage.py purge_uploads``: drop expired unfinished uploads and their bytes.

Run it from cron or a systemd timer (every few minutes is plenty); ``file_start`` also runs the
same purge now and then, so a deployment without the job still cleans up.
"""

from django.core.management.base import BaseCommand

from chat import uploads


class Command(BaseCommand):
    help = "Remove unfinished uploads past their expiry (CHAT_UPLOAD_EXPIRY_SECONDS) and their bytes."

    def handle(self, *args, **options) -> None:
        removed = uploads.uploads_purge()
        if options["verbosity"] > 0:
            self.stdout.write(f"removed {removed} expired upload(s)")
