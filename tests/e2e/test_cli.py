"""The ``trainq`` command against a live stack: gunicorn serving the API, real workers, real servers."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

from api.dev.servers import free_port
from tests.support import LONG, REPO, TRAINQ, row, trainq, wait_training


def submitted_id(result: subprocess.CompletedProcess) -> str:
    assert result.returncode in (0, 1, 2, 3), result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("submitted "), result.stdout
    return first.split()[1]


def test_submit_follow_ends_with_exit_code_0_and_the_final_metrics(cli_env, workers):
    workers()
    done = trainq(cli_env, "submit", "mlp", "-p", "epochs=2", "-p", "hidden_sizes=[16]", "-p", "seed=3",
                  "--name", "cli-follow", "--follow")
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = submitted_id(done)
    assert f"{job_id} completed: training finished" in done.stdout and "val_accuracy" in done.stdout
    job = row(job_id)
    assert job.status == "completed" and job.params["hidden_sizes"] == [16] and job.name == "cli-follow"
    shown = json.loads(trainq(cli_env, "show", job_id[:10], "--json").stdout)
    assert shown["id"] == job_id and shown["metrics"]["val_accuracy"] == job.metrics["val_accuracy"]
    assert "Traceback" not in done.stderr


def test_cancel_from_another_terminal_ends_follow_with_exit_code_2(cli_env, workers):
    workers()
    job_id = submitted_id(trainq(cli_env, "submit", "mlp", "--params-file", _params_file(cli_env, LONG)))
    follower = subprocess.Popen([*TRAINQ, "follow", job_id[:8]], env=cli_env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_training(job_id)
        cancelled = trainq(cli_env, "cancel", job_id[:8])
        assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 2, out + err
    assert f"{job_id} cancelled" in out


def test_logs_follow_prints_lines_as_they_come(cli_env, workers):
    workers()
    job_id = submitted_id(trainq(cli_env, "submit", "mlp", "--params-file", _params_file(cli_env, LONG)))
    wait_training(job_id)
    reader = subprocess.Popen([*TRAINQ, "logs", "-f", job_id], env=cli_env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        first = reader.stdout.readline()  # blocks until the first line comes
        assert job_id in first
        assert row(job_id).status == "running"  # read while the job still runs
        assert trainq(cli_env, "cancel", job_id).returncode == 0
        _, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
    assert reader.returncode == 0, err  # the job ended: -f printed the rest and exited by itself


def test_bad_params_name_the_field_and_never_print_a_traceback(cli_env, workers):
    for args, expected in ((["-p", "epochs=0"], "params.epochs"), (["-p", "nope=1"], "no such param"),
                           (["-p", "epochs=many"], "epochs"), (["-p", "hidden_sizes=[64,"], "not JSON")):
        result = trainq(cli_env, "submit", "mlp", *args)
        assert result.returncode == 1, result.stdout
        assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    unknown = trainq(cli_env, "submit", "no-such-task")
    assert unknown.returncode == 1 and "known tasks: " in unknown.stderr and "mlp" in unknown.stderr


def test_ids_take_a_unique_prefix_and_an_ambiguous_one_lists_the_matches(cli_env):
    ids = []
    while True:  # queued jobs (no worker here): enough that two share a first digit
        ids.append(submitted_id(trainq(cli_env, "submit", "mlp", "-p", "epochs=1")))
        firsts = [i[0] for i in ids]
        shared = next((c for c in firsts if firsts.count(c) > 1), None)
        if shared:
            break
    ambiguous = trainq(cli_env, "show", shared)
    assert ambiguous.returncode == 1 and "is ambiguous" in ambiguous.stderr
    assert sum(i in ambiguous.stderr for i in ids if i.startswith(shared)) >= 2
    unique = trainq(cli_env, "show", ids[0][:13], "--json")
    assert json.loads(unique.stdout)["id"] == ids[0]
    absent = next(p for p in ("00000000-00", "ffffffff-ff") if not any(i.startswith(p) for i in ids))
    assert "no job id starts with" in trainq(cli_env, "show", absent).stderr
    bad = trainq(cli_env, "cancel", "not-hex!")
    assert bad.returncode == 1 and "not a job id" in bad.stderr
    for i in ids:
        assert trainq(cli_env, "cancel", i[:12]).returncode == 0


def test_read_commands_print_json_for_scripts(cli_env, workers):
    workers()
    tasks = json.loads(trainq(cli_env, "tasks", "--json").stdout)
    assert {"mlp", "diabetes-regression"} <= {t["name"] for t in tasks}
    human = trainq(cli_env, "tasks").stdout
    assert "mlp" in human and "epochs" in human and ">= 1" in human
    job_id = submitted_id(trainq(cli_env, "submit", "diabetes-regression", "-p", "epochs=2", "--follow"))
    listed = json.loads(trainq(cli_env, "ls", "--task", "diabetes-regression", "--json").stdout)
    assert job_id in [j["id"] for j in listed]
    assert job_id[:8] in trainq(cli_env, "ls", "--status", "completed").stdout
    artifacts = json.loads(trainq(cli_env, "artifacts", job_id, "--json").stdout)
    assert [a["name"] for a in artifacts] == ["model.pt"]
    out = Path(cli_env["XDG_CONFIG_HOME"]) / "model.pt"
    got = trainq(cli_env, "artifacts", job_id, "--get", "model.pt", "-o", str(out))
    assert got.returncode == 0 and out.stat().st_size == artifacts[0]["size"]


def test_login_keeps_url_and_token_for_this_user_only(cli_env, api_url, admin_token, tmp_path):
    env = {k: v for k, v in cli_env.items() if k not in ("TRAINQ_URL", "TRAINQ_TOKEN")}
    assert "trainq login URL" in trainq(env, "ls").stderr
    bad = subprocess.run([*TRAINQ, "login", api_url], env=env, cwd=REPO, input="wrong-token\n",
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "401" not in bad.stderr and "token" in bad.stderr
    good = subprocess.run([*TRAINQ, "login", api_url], env=env, cwd=REPO, input=admin_token + "\n",
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    config = tmp_path / "trainq" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and admin_token not in good.stdout
    assert trainq(env, "ls").returncode == 0
    gone = trainq({**env, "TRAINQ_URL": f"http://127.0.0.1:{free_port()}"}, "ls")
    assert gone.returncode == 1 and "cannot reach the trainq service at http://127.0.0.1:" in gone.stderr


def _params_file(env: dict[str, str], params: dict) -> str:
    path = Path(env["XDG_CONFIG_HOME"]) / "params.json"
    path.write_text(json.dumps(params))
    return str(path)


def test_the_client_never_follows_a_redirect_with_the_token(cli_env, tmp_path):
    import http.server
    import threading

    seen: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's name
            seen.append(self.headers.get("Authorization") or "")
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/elsewhere")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = trainq({**cli_env, "TRAINQ_URL": f"http://127.0.0.1:{server.server_port}"}, "ls")
    finally:
        server.shutdown()
    assert result.returncode == 1 and "redirected to" in result.stderr and "not followed" in result.stderr
    assert len(seen) == 1  # asked once; the redirect's target never got the token


def test_control_characters_from_the_service_are_shown_not_sent_to_the_terminal(cli_env, client):
    from api.record.tables import TrainingJob
    from api.stores import db

    job_id = submitted_id(trainq(cli_env, "submit", "mlp", "-p", "epochs=1"))
    db.session.get(TrainingJob, job_id).name = "\x1b[2J\x1b]0;owned\x07evil [bold]x[/bold]"  # an older row's name
    db.session.commit()
    for args in (("ls",), ("show", job_id[:8])):
        out = trainq(cli_env, *args).stdout
        assert "\x1b" not in out and "\x07" not in out and "\\x1b[2J" in out and "[bold]x[/bold]" in out, out


def test_a_failed_download_leaves_the_local_file_alone(cli_env, tmp_path):
    job_id = submitted_id(trainq(cli_env, "submit", "mlp", "-p", "epochs=1"))
    target = tmp_path / "model.pt"
    target.write_bytes(b"mine")
    missing = trainq(cli_env, "artifacts", job_id, "--get", "model.pt", "-o", str(target))
    assert missing.returncode == 1 and target.read_bytes() == b"mine"
    nowhere = trainq(cli_env, "artifacts", job_id, "--get", "model.pt", "-o", str(tmp_path / "no" / "x"))
    assert nowhere.returncode == 1 and "no folder" in nowhere.stderr and "Traceback" not in nowhere.stderr
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    unreadable = trainq(cli_env, "submit", "mlp", "--params-file", str(bad))
    assert unreadable.returncode == 1 and "UTF-8" in unreadable.stderr and "Traceback" not in unreadable.stderr
    for url in ("http://127.0.0.1:5000/ ", "127.0.0.1:5000"):
        wrong = trainq({**cli_env, "TRAINQ_URL": url}, "ls")
        assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr


def test_ls_filters_and_sorts_submit_clone_and_history(cli_env, client):
    import uuid as uuid_module

    from sqlalchemy import update

    from api.record.tables import TrainingJob
    from api.stores import db

    ids = {}
    for name, loss in (("sweep-lr-1", 0.5), ("sweep-lr-2", 0.25), ("other", None)):
        ids[name] = submitted_id(trainq(cli_env, "submit", "mlp", "-p", "epochs=3", "--name", name))
        if loss is not None:
            db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid_module.UUID(ids[name])).values(
                metrics={"val_loss": loss}, history=[{"epoch": 1, "step": 5, "val_loss": loss}]))
            db.session.commit()
    listed = json.loads(trainq(cli_env, "ls", "--name", "SWEEP", "--json").stdout)
    assert sorted(job["name"] for job in listed) == ["sweep-lr-1", "sweep-lr-2"]
    best = trainq(cli_env, "ls", "--sort", "val_loss")
    assert best.returncode == 0 and "val_loss" in best.stdout.splitlines()[0]
    lines = [line for line in best.stdout.splitlines() if "sweep" in line]
    assert "sweep-lr-2" in lines[0] and "0.25" in lines[0] and "other" not in best.stdout
    worst = json.loads(trainq(cli_env, "ls", "--sort", "-val_loss", "--json").stdout)
    assert [job["name"] for job in worst] == ["sweep-lr-1", "sweep-lr-2"]
    assert json.loads(trainq(cli_env, "ls", "--since", "2999-01-01", "--json").stdout) == []
    bad = trainq(cli_env, "ls", "--since", "soon")
    assert bad.returncode == 1 and "since" in bad.stderr and "Traceback" not in bad.stderr

    clone = trainq(cli_env, "submit", "--clone", ids["sweep-lr-1"][:8], "-p", "learning_rate=0.5")
    clone_id = submitted_id(clone)
    job = row(clone_id)
    assert str(job.cloned_from) == ids["sweep-lr-1"] and job.name == "sweep-lr-1" and job.task == "mlp"
    assert job.params["epochs"] == 3 and job.params["learning_rate"] == 0.5
    neither = trainq(cli_env, "submit")
    assert neither.returncode == 1 and "--clone" in neither.stderr

    csv_text = trainq(cli_env, "history", ids["sweep-lr-2"]).stdout
    assert csv_text.splitlines() == ["epoch,step,val_loss", "1,5,0.25"]
    as_json = json.loads(trainq(cli_env, "history", ids["sweep-lr-2"], "--format", "json").stdout)
    assert as_json["history"] == [{"epoch": 1, "step": 5, "val_loss": 0.25}]


def _set_row(job_id: str, **values) -> None:
    import uuid as uuid_module

    from sqlalchemy import update

    from api.record.tables import TrainingJob
    from api.stores import db

    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid_module.UUID(job_id)).values(**values))
    db.session.commit()


def _end(job_id: str, status: str) -> None:
    from api.record.status import Actor, JobStatus
    from api.record.status_writer import transition

    transition(job_id, JobStatus.RUNNING, reason="started by worker w1 (attempt 1)", actor=Actor.WORKER)
    transition(job_id, JobStatus(status), reason="test", actor=Actor.WORKER)


def test_ls_in_80_columns_keeps_every_status_whole_and_shrinks_the_name_first(cli_env, ctx):
    long_name = "a-rather-long-experiment-name-with-its-learning-rate-0.001-and-seed-7"
    ids = [submitted_id(trainq(cli_env, "submit", "diabetes-regression", "--name", long_name)) for _ in range(2)]
    _end(ids[0], "completed")
    _end(ids[1], "cancelled")
    narrow = trainq({**cli_env, "COLUMNS": "80"}, "ls")
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "completed" in rows[ids[0][:8]].split() and "cancelled" in rows[ids[1][:8]].split()
    assert "diabetes-regression" in rows[ids[0][:8]] or "…" in rows[ids[0][:8]]
    assert long_name not in narrow.stdout and "…" in rows[ids[0][:8]]  # the name gave way
    assert "created" in lines[0] and rows[ids[0][:8]].rstrip()[-8:].count(":") == 2  # the time is whole too
    wide = trainq(cli_env, "ls")  # 200 columns: nothing is cut
    assert long_name in wide.stdout and "…" not in wide.stdout


def test_compare_prints_final_metrics_the_params_that_differ_and_the_pages_url(cli_env, api_url, ctx):
    first = submitted_id(trainq(cli_env, "submit", "mlp", "-p", "learning_rate=0.1", "-p", "epochs=3", "--name", "a"))
    second = submitted_id(trainq(cli_env, "submit", "mlp", "-p", "learning_rate=0.01", "-p", "epochs=3",
                                 "--name", "b"))
    third = submitted_id(trainq(cli_env, "submit", "mlp", "-p", "learning_rate=0.5", "-p", "epochs=3", "--name", "c"))
    ran = {"attempt": 1, "code_version": "0123456789abcdef", "module": "builtin_tasks.tasks", "package": "trainq",
           "package_version": "0.1.0", "git_commit": "a" * 40, "git_dirty": False, "python": "3.11.7",
           "torch": "2.13.0+cpu", "cuda": None, "gpu_driver": None, "hostname": "box"}
    _set_row(first, metrics={"val_loss": 0.5, "val_accuracy": 0.8}, provenance=ran)
    _set_row(second, metrics={"val_loss": 0.25, "val_accuracy": 0.9}, provenance={**ran, "code_version": "fedcba98"})
    _set_row(third, metrics={"val_loss": 0.1, "val_accuracy": 0.95}, provenance=ran)
    _end(first, "completed")
    _end(second, "completed")
    _end(third, "cancelled")  # its better numbers are from a run cut short: partial, never the best
    shown = trainq(cli_env, "compare", first[:8], second[:8], third[:8])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    loss = next(line for line in lines if line.startswith("val_loss"))
    assert "(lower is better)" in loss and "0.25 ★" in loss and "0.1 (partial)" in loss and "0.5 ★" not in loss
    accuracy = next(line for line in lines if line.startswith("val_accuracy"))
    assert "0.9 ★" in accuracy and "0.95 (partial)" in accuracy
    rate = next(line for line in lines if line.startswith("learning_rate"))
    assert "0.1" in rate and "0.01" in rate and "0.5" in rate
    assert not any(line.startswith("epochs") for line in lines)  # equal params are left out
    code = next(line for line in lines if line.startswith("code version"))
    assert "0123456789abcdef" in code and "fedcba98" in code
    assert not any(line.startswith("torch") for line in lines)
    assert lines[-1] == f"compare page: {api_url}/compare?ids={first},{second},{third}"
    as_json = json.loads(trainq(cli_env, "compare", first, second, "--json").stdout)
    assert [job["id"] for job in as_json["jobs"]] == [first, second] and as_json["url"].endswith(f"{first},{second}")
    none = trainq(cli_env, "compare")
    assert none.returncode == 2 and "Traceback" not in none.stderr


def test_show_lists_the_runs_and_what_ran_the_job(cli_env, workers):
    workers()
    job_id = submitted_id(trainq(cli_env, "submit", "diabetes-regression", "-p", "epochs=2", "--fail-on-nan",
                                 "--follow"))
    assert row(job_id).fail_on_nan is True
    shown = trainq(cli_env, "show", job_id[:8])
    assert shown.returncode == 0, shown.stderr
    ran = row(job_id).provenance
    assert f"{ran['code_version']} (builtin_tasks.tasks)" in shown.stdout
    assert f"trainq {ran['package_version']}" in shown.stdout and ran["git_commit"] in shown.stdout
    assert f"Python {ran['python']}, torch {ran['torch']}" in shown.stdout
    assert "training time" in shown.stdout


def test_show_says_where_a_paused_job_resumes(cli_env, ctx):
    from api.record.status import Actor, JobStatus
    from api.record.status_writer import transition

    job_id = submitted_id(trainq(cli_env, "submit", "mlp", "-p", "epochs=3"))
    _set_row(job_id, step=422, resume_from=f"/c/{job_id}/ckpt-000003-e3-s395.pt")
    transition(job_id, JobStatus.RUNNING, reason="started by worker w1 (attempt 1)", actor=Actor.WORKER)
    transition(job_id, JobStatus.PAUSED, reason="paused", actor=Actor.WORKER)
    shown = trainq(cli_env, "show", job_id[:8]).stdout
    assert re.search(r"resumes from +step 395, epoch 3", shown), shown
