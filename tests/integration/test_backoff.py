"""Per-address backoff on refused credentials (issue 21, item 6): past AUTH_FAILURES refused bearer tokens from one
address in a window, a refused one is a 429 with Retry-After; a valid token from that address still passes; other
addresses are untouched; the count lives in Redis (every gunicorn worker's), in at most two keys of bounded size;
each refusal is logged, never its token."""

from __future__ import annotations

import logging

import pytest

from api.web import throttle

ATTACKER = {"REMOTE_ADDR": "10.1.2.3"}


@pytest.fixture
def limited(ctx):
    saved = {key: ctx.config[key] for key in ("AUTH_FAILURES", "AUTH_FAILURE_WINDOW")}
    ctx.config.update(AUTH_FAILURES=3, AUTH_FAILURE_WINDOW=60)
    yield ctx
    ctx.config.update(saved)
    ctx.config.pop("AUTH_FAILURE_ADDRESSES", None)


def _try(test_client, token: str, address: dict[str, str] = ATTACKER, url: str = "/api/me"):
    return test_client.get(url, headers={"Authorization": f"Bearer {token}"}, environ_base=address)


def test_refused_tokens_from_one_address_get_429_but_a_valid_token_passes(limited, anon, make_user, redis, caplog,
                                                                         monkeypatch):
    user, _, raw = make_user("backoff")
    logger = logging.getLogger("api.web.throttle")
    monkeypatch.setattr(logger, "disabled", False)  # alembic's logging config (the migrations) turned it off
    caplog.set_level(logging.WARNING, logger="api.web.throttle")
    for _ in range(3):
        assert _try(anon, "tq_guess").status_code == 401
    refused = _try(anon, "tq_guess")
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "too_many_failures"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert _try(anon, "tq_guess", url="/api/health").status_code == 429  # no oracle on a public route either
    assert anon.get("/api/me", headers={"Authorization": "Basic x"}, environ_base=ATTACKER).status_code == 429
    assert _try(anon, raw).status_code == 200  # never locked out with a valid token
    assert _try(anon, raw).get_json()["user"]["name"] == user.name
    assert _try(anon, "tq_guess", {"REMOTE_ADDR": "10.9.9.9"}).status_code == 401  # another address: its own count
    [key] = redis.keys("trainq:auth-failures:*")  # shared by every worker, one key per window
    assert int(redis.hget(key, "10.1.2.3")) >= 4 and 0 < redis.ttl(key) <= 120
    text = caplog.text
    assert text.count("refused credential from 10.1.2.3") == 3 and "too many refused credentials from 10.1.2.3" in text
    assert "tq_guess" not in text and raw not in text


def test_an_ipv6_caller_is_counted_by_its_64(limited, anon):
    for host in range(1, 4):
        assert _try(anon, "tq_guess", {"REMOTE_ADDR": f"2001:db8:1:2::{host}"}).status_code == 401
    assert _try(anon, "tq_guess", {"REMOTE_ADDR": "2001:db8:1:2::99"}).status_code == 429
    assert _try(anon, "tq_guess", {"REMOTE_ADDR": "2001:db8:1:3::1"}).status_code == 401


def test_the_table_is_bounded_and_a_full_one_refuses_new_addresses(limited, anon, make_user, redis):
    _, _, raw = make_user("bounded")
    limited.config["AUTH_FAILURE_ADDRESSES"] = 5
    for host in range(5):
        assert _try(anon, "tq_guess", {"REMOTE_ADDR": f"10.0.0.{host}"}).status_code == 401
    for host in range(5, 50):  # addresses without room: refused as past the limit, and not kept
        assert _try(anon, "tq_guess", {"REMOTE_ADDR": f"10.0.0.{host}"}).status_code == 429
    assert _try(anon, raw, {"REMOTE_ADDR": "10.0.0.99"}).status_code == 200
    [key] = redis.keys("trainq:auth-failures:*")
    assert redis.hlen(key) == 5


def test_without_redis_a_refused_token_is_still_a_401(limited, anon, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    def down():
        raise RedisConnectionError("down")

    monkeypatch.setattr(throttle.redis_connection, "get", down)
    for _ in range(6):
        assert _try(anon, "tq_guess").status_code == 401
