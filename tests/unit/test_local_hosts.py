"""make run's allowed Host names: the loopback names, plus the address HOST binds when it names one."""

from api.dev.servers import allowed_hosts_for


def test_loopback_by_default():
    assert allowed_hosts_for("127.0.0.1") == "localhost,127.0.0.1,::1"


def test_a_bound_address_is_allowed_too():
    assert allowed_hosts_for("192.168.1.20") == "localhost,127.0.0.1,::1,192.168.1.20"
    assert allowed_hosts_for("gpu-box.lan") == "localhost,127.0.0.1,::1,gpu-box.lan"


def test_binding_everything_names_nothing_more():
    assert allowed_hosts_for("0.0.0.0") == "localhost,127.0.0.1,::1"
