"""``trainq webhooks ...`` and ``trainq tensorboard`` against the API behind gunicorn (WEBHOOK_ALLOW_PRIVATE on,
for the test's receiver on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from api.service import webhook_sender
from tests.integration.test_webhooks import admin_id, end, new_job
from tests.support import trainq
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api_settings() -> dict[str, str]:
    return {"WEBHOOK_ALLOW_PRIVATE": "1"}  # the test's receiver is on 127.0.0.1


def test_add_list_deliveries_send_again_and_remove(ctx, api_url, admin_token, tmp_path, monkeypatch):
    env = {**os.environ, "TRAINQ_URL": api_url, "TRAINQ_TOKEN": admin_token, "XDG_CONFIG_HOME": str(tmp_path)}
    receiver = Receiver().start()
    try:
        added = trainq(env, "webhooks", "add", receiver.url, "--on", "failed,completed")
        assert added.returncode == 0, added.stderr
        receiver.secret = added.stdout.split("X-Trainq-Signature with it): ")[1].strip()
        hook_id = int(added.stdout.split(":")[0].removeprefix("webhook "))
        listed = json.loads(trainq(env, "webhooks", "ls", "--json").stdout)
        assert [h["url"] for h in listed if h["id"] == hook_id] == [receiver.url]
        monkeypatch.setitem(ctx.config, "WEBHOOK_ALLOW_PRIVATE", True)
        end(new_job(admin_id()))
        webhook_sender.run_once(ctx.config)
        assert len(receiver.received) == 1 and receiver.received[0].verified
        deliveries = json.loads(trainq(env, "webhooks", "deliveries", str(hook_id), "--json").stdout)
        assert deliveries[0]["status"] == "delivered"
        again = trainq(env, "webhooks", "send-again", str(hook_id), deliveries[0]["id"])
        assert again.returncode == 0, again.stderr
        webhook_sender.run_once(ctx.config)
        assert [r.key for r in receiver.received] == [deliveries[0]["id"]] * 2
        bad = trainq(env, "webhooks", "add", "http://169.254.169.254/", "--on", "failed")
        assert bad.returncode == 1 and "metadata" in bad.stderr
        assert trainq(env, "webhooks", "rm", str(hook_id)).returncode == 0
    finally:
        receiver.stop()


def test_tensorboard_prints_the_command_for_a_job_with_event_files(ctx, api_url, admin_token, tmp_path):
    from api.record.status import utcnow
    from api.record.webhook_tables import JobTrackers
    from api.stores import db

    env = {**os.environ, "TRAINQ_URL": api_url, "TRAINQ_TOKEN": admin_token, "XDG_CONFIG_HOME": str(tmp_path)}
    job_id = new_job(admin_id())
    folder = tmp_path / "tb"
    folder.mkdir()
    db.session.add(JobTrackers(job_id=job_id, tensorboard_dir=str(folder), lost_reports=0, updated_at=utcnow()))
    db.session.commit()
    shown = trainq(env, "tensorboard", str(job_id)[:8], "--print")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"tensorboard --logdir_spec {str(job_id)[:8]}:{folder} --port 6006"
    assert Path(folder).is_dir()
