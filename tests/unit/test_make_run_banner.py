"""What ``make run`` prints: the login link with the admin's token only to a terminal."""

from pathlib import Path

from api.dev.serving import bind_address, gunicorn_command
from api.dev.supervisor import banner


def test_the_login_link_goes_to_a_terminal_only():
    token_file = Path("/clone/var/admin.token")
    on_a_terminal = banner("http://127.0.0.1:5000", "tq_secret", token_file, tty=True)
    assert "http://127.0.0.1:5000/login#token=tq_secret" in on_a_terminal and str(token_file) in on_a_terminal
    redirected = banner("http://127.0.0.1:5000", "tq_secret", token_file, tty=False)
    assert "tq_secret" not in redirected
    assert "http://127.0.0.1:5000/login" in redirected and f"kept in {token_file}" in redirected


def test_gunicorn_binds_the_host_asked_for_with_bounded_threads_and_timeouts():
    command = gunicorn_command("api.wsgi:app", "::", 5000)
    assert command[1:3] == ["-m", "gunicorn"] and command[-1] == "api.wsgi:app"
    for option in ("--threads", "--worker-connections", "--timeout", "--keep-alive"):
        assert int(command[command.index(option) + 1]) > 0
    assert command[command.index("--bind") + 1] == "[::]:5000" and bind_address("127.0.0.1", 80) == "127.0.0.1:80"


def test_readiness_probes_with_a_host_the_service_answers_to():
    from api.dev.readiness import host_header

    assert host_header("localhost,127.0.0.1,::1", 5000) is None  # make run's own default
    assert host_header("*", 5000) is None and host_header("", 5000) is None
    assert host_header("trainq.example.com,other.example.com", 5000) == "trainq.example.com:5000"
    assert host_header("::1", 80) == "[::1]:80"
