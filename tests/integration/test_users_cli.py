"""``flask --app api users ...`` and ``tokens ...``: a token is printed once, as the last line of its output, and
works at once; list shows no token; revoke and disable take effect on the next request."""

from __future__ import annotations

import stat
import uuid

from api.stores import db
from api.web import auth
from tests.support import SHORT, submit


def _run(ctx, *args: str):
    result = ctx.test_cli_runner().invoke(args=list(args))
    return result


def test_users_and_tokens_from_the_command_line(ctx):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    created = _run(ctx, "users", "create", name, "--max-queued-jobs", "5")
    assert created.exit_code == 0 and f"created user {name}" in created.output
    assert _run(ctx, "users", "create", name).exit_code == 1  # taken
    made = _run(ctx, "tokens", "create", name, "--expires-in", "30", "--name", "laptop")
    assert made.exit_code == 0, made.output
    lines = made.output.strip().splitlines()
    token = lines[-1]
    assert token.startswith("tq_") and len(token) >= 46 and token not in "\n".join(lines[:-1])
    assert "laptop" in lines[0] and "expires 20" in lines[0]
    user_client = ctx.test_client(token=token)
    job_id = submit(user_client, SHORT)
    assert user_client.get(f"/api/training/{job_id}").get_json()["owner"] == name

    listed = _run(ctx, "tokens", "list", name)
    assert listed.exit_code == 0 and "laptop" in listed.output and token not in listed.output
    token_id = listed.output.split("\t", 1)[0]
    users = _run(ctx, "users", "list")
    assert name in users.output and "max_queued_jobs=5" in users.output

    revoked = _run(ctx, "tokens", "revoke", token_id)
    assert revoked.exit_code == 0 and "revoked token" in revoked.output
    assert user_client.get("/api/training").status_code == 401
    assert "revoked_at" not in listed.output and _run(ctx, "tokens", "list", name).output.count("\t-") < \
        listed.output.count("\t-")  # the revocation time is listed now

    second = _run(ctx, "tokens", "create", name).output.strip().splitlines()[-1]
    assert ctx.test_client(token=second).get("/api/training").status_code == 200
    disabled = _run(ctx, "users", "disable", name)
    assert disabled.exit_code == 0
    assert ctx.test_client(token=second).get("/api/training").status_code == 401
    enabled = _run(ctx, "users", "enable", name)
    assert enabled.exit_code == 0 and f"enabled user {name}" in enabled.output
    assert ctx.test_client(token=second).get("/api/training").status_code == 200


def test_management_errors_are_one_line_and_exit_1(ctx):
    for args in (("tokens", "create", "nobody-at-all"), ("tokens", "list", "nobody-at-all"),
                 ("users", "disable", "nobody-at-all"), ("tokens", "revoke", "999999"),
                 ("users", "create", "bad name!")):
        result = _run(ctx, *args)
        assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output, args
    assert _run(ctx, "tokens", "create", "admin", "--expires-in", "0").exit_code == 2  # click: not > 0


def test_an_admin_user_made_with_the_cli_acts_on_every_job(ctx, make_user):
    name = f"boss-{uuid.uuid4().hex[:6]}"
    assert _run(ctx, "users", "create", name, "--admin").exit_code == 0
    token = _run(ctx, "tokens", "create", name).output.strip().splitlines()[-1]
    _, owner_client, _ = make_user("worker-bee")
    job_id = submit(owner_client, SHORT)
    assert ctx.test_client(token=token).delete(f"/api/training/{job_id}").status_code == 200


def test_local_admin_makes_an_admin_and_keeps_a_working_token(ctx, tmp_path):
    token_file = tmp_path / "admin.token"
    first = _run(ctx, "users", "local-admin", str(token_file))
    assert first.exit_code == 0, first.output
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token not in first.output
    assert ctx.test_client(token=token).get("/api/me").get_json()["user"]["is_admin"]
    again = _run(ctx, "users", "local-admin", str(token_file))
    assert "still works" in again.output and token_file.read_text().strip() == token
    [row] = [t for t in auth.list_tokens(auth.first_admin()) if auth.hash_token(token) == t.token_hash]
    auth.revoke_token(row.id)
    db.session.commit()
    renewed = _run(ctx, "users", "local-admin", str(token_file))
    assert "a new token" in renewed.output and token_file.read_text().strip() != token


def test_a_database_it_cannot_use_is_one_line_naming_it(settings):
    from api.dev.servers import free_port
    from tests.conftest import make_app

    app = make_app(settings, DATABASE_URL=f"postgresql://postgres:secret@127.0.0.1:{free_port()}/nothing")
    result = app.test_cli_runner().invoke(args=["users", "list"])
    assert result.exit_code == 1 and "cannot use the database at postgresql://postgres:***@" in result.output
    assert "Traceback" not in result.output and "secret" not in result.output
