"""Management commands given careless input answer one clear line on stderr and exit status 2,
never a traceback; nothing is created."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import BASE_DIR, worker_env
from webhooks.models import ApiKey, Source

pytestmark = pytest.mark.django_db(transaction=True)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create_api_key", "x" * 300], "name: Ensure this value has at most 50"),
        (["create_api_key", "k", "--expires-in-days", "nan"], "number of days"),
        (["create_api_key", "k", "--expires-in-days", "inf"], "number of days"),
        (["create_api_key", "k", "--expires-in-days", "-3"], "number of days"),
        (["create_api_key", "k", "--expires-in-days", "soon"], "not a number"),
        (["create_api_key", "k", "--application", "nope"], "no application 'nope'"),
        (["create_api_key", "k", "--scopes", "read,everything"], "unknown scopes"),
        (["create_source", "x" * 300], "at most 200"),
        (["create_source", "s", "--application", "nope"], "no application 'nope'"),
        (["revoke_api_key", "nope1234"], "no API key"),
        (["send_test_event", "ep_nope"], "no endpoint"),
    ],
)
def test_careless_arguments_get_one_line_and_status_2(args: list[str], says: str) -> None:
    result = _run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # one line says what is wrong (argparse prints its usage above it, as every CLI does)
    assert says in lines[-1], result.stderr
    assert lines[-1].startswith(("CommandError:", "manage.py")), result.stderr
    assert not ApiKey.objects.exists()
    assert not Source.objects.exists()
