"""A job's artifact folder that is a link is refused before anything resolves it (issue 21, item 6): a link
``ARTIFACT_DIR/<id>`` -> /etc served /etc/passwd."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from api.record.status import utcnow
from api.record.tables import JobArtifact
from api.stores import db
from tests.support import SHORT, submit


def test_an_artifact_folder_that_is_a_link_is_refused(ctx, client, tmp_path: Path):
    job_id = submit(client, SHORT)
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "passwd").write_text("root:x:0:0\n")
    folder = Path(ctx.config["ARTIFACT_DIR"]) / job_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(elsewhere, target_is_directory=True)
    try:
        db.session.add(JobArtifact(job_id=uuid.UUID(job_id), name="passwd", size=11, attempt=1,
                                   sha256=hashlib.sha256(b"root:x:0:0\n").hexdigest(), path=str(folder / "passwd"),
                                   created_at=utcnow()))
        db.session.commit()
        response = client.get(f"/api/training/{job_id}/artifacts/passwd")
        assert response.status_code == 404 and b"root:x" not in response.data
        assert "is a link" in response.get_json()["error"]["message"]
    finally:
        folder.unlink()
