"""`manage.py verify_audit_chain`: check every audit record's hash and link; exit 1 on a break."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from audit.chain import verify_chain
from webhooks.management.base import Command as SafeCommand


class Command(SafeCommand):
    help = "Walk the audit log's hash chain from the first record and report the first break."

    def handle(self, *args: Any, **options: Any) -> None:
        checked, broken = verify_chain()
        if broken is not None:
            raise CommandError(
                f"audit chain broken at record {broken.record_id}: {broken.reason} "
                f"({checked} records before it verified)"
            )
        self.stdout.write(f"audit chain intact: {checked} records verified")
