"""Logins under --auth: password checks off the event loop, the same answer for unknown names, failed attempts
limited per name and per client address (never locking a name's owner out; the address from X-Forwarded-For only
through a trusted proxy), and annotators' votes unhurt by a flood of wrong passwords."""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest
from labfix import fill, free_port, http_login, start_server

from labeler.store import Store
from labeler.users import add_user

VOTERS, FLOODERS = 4, 4


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18]


def test_votes_keep_their_latency_during_a_login_flood(tmp_path):
    """4 annotators vote while 4 threads try wrong passwords for a known user (bcrypt cost 12, as in production)."""
    users = tmp_path / "users.json"
    for name in ["alice"] + [f"v{i}" for i in range(VOTERS)]:
        add_user(users, name, f"{name}-pw", rounds=12 if name == "alice" else 4)
    db = str(tmp_path / "labels.sqlite")
    fill(Store(db, overlap=VOTERS), 160, k=2)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_server(db, port, "--auth", str(users), "--overlap", str(VOTERS))
    phase = {"name": "warmup"}
    latencies: dict[str, list[float]] = {"warmup": [], "quiet": [], "flood": [], "quiet again": []}
    attempts: list[int] = []
    done, errors = threading.Event(), []

    def vote(i: int):
        try:
            c = http_login(url, f"v{i}")
            view = c.post("gradio_api/run/next", json={"data": [""]}).json()["data"][0]["view"]
            while view is not None and not done.is_set():
                t0 = time.perf_counter()
                r = c.post("gradio_api/run/vote", json={"data": [view["comparison_id"], view["token"], "ab"[i % 2],
                                                                  "", ""]})
                latencies[phase["name"]].append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                view = r.json()["data"][0]["view"]
                time.sleep(0.1)  # people look before they click
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    def flood(stop: threading.Event):
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                attempts.append(c.post("login", data={"username": "alice", "password": "guess"}).status_code)

    voters = [threading.Thread(target=vote, args=(i,)) for i in range(VOTERS)]
    try:
        for t in voters:
            t.start()
        time.sleep(1)
        for name, seconds in (("quiet", 5), ("flood", 6), ("quiet again", 4)):
            phase["name"] = name
            stop = threading.Event()
            flooders = [threading.Thread(target=flood, args=(stop,)) for _ in range(FLOODERS if name == "flood" else 0)]
            for t in flooders:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in flooders:
                t.join()
        done.set()
        for t in voters:
            t.join(timeout=30)
    finally:
        done.set()
        server.kill()
        server.wait()
    assert not errors, errors[:3]
    quiet = max(p95(latencies["quiet"]), p95(latencies["quiet again"]))
    flooded = p95(latencies["flood"])
    summary = {k: (len(v), round(1000 * statistics.median(v)), round(1000 * p95(v))) for k, v in latencies.items()
               if len(v) > 1}
    print(f"votes (n, p50 ms, p95 ms): {summary}; {len(attempts)} login attempts: "
          f"{ {s: attempts.count(s) for s in set(attempts)} }")
    assert len(latencies["flood"]) >= 50 and attempts
    assert flooded <= 2 * quiet, summary


@pytest.fixture
def limited(tmp_path):
    """An in-process server with small limits: 3 failures per name, 6 per address, failed logins answer in 0.6 s."""
    from labeler.app import serve
    from labeler.users import LoginPolicy

    users = tmp_path / "users.json"
    add_user(users, "alice", "alice-pw", rounds=12)
    add_user(users, "bob", "bob-pw", rounds=12)
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 2, k=2)
    policy = LoginPolicy(fail_seconds=0.6, per_user=3, per_address=6, window=60)
    servers = []

    def start(**kw) -> str:
        demo, url = serve(store, port=free_port(), auth_file=str(users), block=False, quiet=True, login_policy=policy,
                          **kw)
        servers.append(demo)
        return url

    yield start(), policy, start
    for demo in servers:
        demo.close()


def attempt(url: str, name: str, password: str, source: str, forwarded: str | None = None) -> tuple[int, float, str]:
    """POST /login from the loopback address `source` (127.0.0.x), naming `forwarded` in X-Forwarded-For;
    (status, seconds, body)."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address=source)) as c:
        t0 = time.perf_counter()
        r = c.post("login", data={"username": name, "password": password}, headers=headers)
        return r.status_code, time.perf_counter() - t0, r.text


def fail_many(url: str, n: int, source: str, forwarded: str | None = None, name: str | None = None) -> list[int]:
    """`n` wrong passwords at once (on `name`, or on n unknown names); their statuses, sorted."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        tries = [(name or f"nobody{i}", "wrong", source, forwarded) for i in range(n)]
        return sorted(r[0] for r in pool.map(lambda a: attempt(url, *a), tries))


def test_failed_logins_are_limited_per_name_and_per_address(limited):
    from concurrent.futures import ThreadPoolExecutor

    url, policy, _ = limited
    with ThreadPoolExecutor(8) as pool:  # all at once: attempts in flight count too, so the limit holds exactly
        tries = [("alice", "wrong", "127.0.0.2")] * policy.per_user
        assert [r[0] for r in pool.map(lambda a: attempt(url, *a), tries)] == [400] * policy.per_user
    status, _, text = attempt(url, "alice", "alice-pw", "127.0.0.2")  # the right password, too late
    assert status == 429 and "too many failed logins" in text
    assert attempt(url, "bob", "bob-pw", "127.0.0.2")[0] == 200  # other names are not refused there
    # One address trying many names is stopped too, and then locked for every name.
    with ThreadPoolExecutor(8) as pool:
        tries = [(f"nobody{i}", "pw", "127.0.0.4") for i in range(policy.per_address + 1)]
        codes = sorted(r[0] for r in pool.map(lambda a: attempt(url, *a), tries))
    assert codes == [400] * policy.per_address + [429]
    assert attempt(url, "bob", "bob-pw", "127.0.0.4")[0] == 429
    assert attempt(url, "bob", "bob-pw", "127.0.0.5")[0] == 200
    http_login(url, "bob", transport=httpx.HTTPTransport(local_address="127.0.0.6"))  # a normal login still works
    with ThreadPoolExecutor(8) as pool:  # a success forgets the name's failures: typos now and then never lock
        for _ in range(2):
            tries = [("bob", "typo", "127.0.0.7")] * (policy.per_user - 1)
            assert [r[0] for r in pool.map(lambda a: attempt(url, *a), tries)] == [400] * (policy.per_user - 1)
            assert attempt(url, "bob", "bob-pw", "127.0.0.7")[0] == 200


def test_wrong_passwords_never_lock_a_name_out_for_its_owner(limited):
    """Anyone could lock a colleague out by typing wrong passwords for their name. Now the name is refused only to
    the addresses that failed on it: its owner logs in from anywhere else, and a guesser spread over many addresses
    gets one more try per new address."""
    url, policy, _ = limited
    assert fail_many(url, policy.per_user + 2, "127.0.0.2", name="alice") == [400] * policy.per_user + [429] * 2
    assert attempt(url, "alice", "alice-pw", "127.0.0.2")[0] == 429  # from the address that guessed: refused
    assert attempt(url, "alice", "alice-pw", "127.0.0.3")[0] == 200  # alice, at her own desk: in
    assert attempt(url, "alice", "guess", "127.0.0.4")[0] == 400  # a fresh address: one guess is checked ...
    assert attempt(url, "alice", "alice-pw", "127.0.0.4")[0] == 429  # ... and then the name is shut to it
    assert attempt(url, "alice", "alice-pw", "127.0.0.3")[0] == 200  # still no lockout for the owner


def test_forwarded_for_is_trusted_only_from_named_proxies(limited):
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise: a locked-out address logged in again by
    adding the header, and anyone could lock out another address by naming it. Only --trusted_proxies may name."""
    url, policy, start = limited
    # No trusted proxies (the default): the header names nobody, even from 127.0.0.1.
    assert fail_many(url, policy.per_address, "127.0.0.1", forwarded="127.0.0.9") == [400] * policy.per_address
    assert attempt(url, "bob", "bob-pw", "127.0.0.9")[0] == 200  # the address named in the header is not locked
    assert attempt(url, "bob", "bob-pw", "127.0.0.1")[0] == 429  # the one that failed is ...
    assert attempt(url, "bob", "bob-pw", "127.0.0.1", forwarded="203.0.113.5")[0] == 429  # ... header or not
    # Behind a proxy the operator names, the header tells its clients apart; from anyone else it is ignored.
    proxied = start(trusted_proxies=["127.0.0.1"])
    assert fail_many(proxied, policy.per_address, "127.0.0.1", forwarded="203.0.113.7") == [400] * policy.per_address
    assert attempt(proxied, "bob", "bob-pw", "127.0.0.1", forwarded="203.0.113.7")[0] == 429
    assert attempt(proxied, "bob", "bob-pw", "127.0.0.1", forwarded="203.0.113.8")[0] == 200
    assert fail_many(proxied, policy.per_address, "127.0.0.2", forwarded="203.0.113.8") == [400] * policy.per_address
    assert attempt(proxied, "bob", "bob-pw", "127.0.0.2", forwarded="203.0.113.99")[0] == 429  # not a proxy of ours
    assert attempt(proxied, "bob", "bob-pw", "127.0.0.1", forwarded="203.0.113.8")[0] == 200


def test_trusted_proxies_flag_is_checked(tmp_path, capsys):
    from vrlhf.cli import main as vrlhf_main

    users = tmp_path / "users.json"
    add_user(users, "bob", "bob-pw", rounds=4)
    db = str(tmp_path / "labels.sqlite")
    cases = [(["--auth", str(users), "--trusted_proxies", "proxy.local"], "--trusted_proxies proxy.local: not an IP"),
             (["--trusted_proxies", "10.0.0.2"], "--trusted_proxies needs --auth")]
    for extra, line in cases:
        assert vrlhf_main(["label", "--db", db, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"vrlhf label: {line}") and err.count("\n") == 1, err
    assert not (tmp_path / "labels.sqlite").exists()  # refused before anything is created


def test_unknown_and_known_names_answer_alike(limited):
    """A wrong password for a real name and any password for an unknown name: same status, body and time."""
    url, policy, _ = limited
    attempt(url, "warmup", "wrong", "127.0.3.1")  # after the dummy hash, computed at start, is ready
    known = [attempt(url, "alice", f"wrong{i}", f"127.0.1.{i}") for i in range(2)]
    unknown = [attempt(url, f"mallory{i}", "wrong", f"127.0.2.{i}") for i in range(2)]
    assert {(s, body) for s, _, body in known} == {(s, body) for s, _, body in unknown} == {(400, known[0][2])}
    t_known, t_unknown = statistics.median(t for _, t, _ in known), statistics.median(t for _, t, _ in unknown)
    assert all(t >= policy.fail_seconds for _, t, _ in known + unknown)
    assert abs(t_known - t_unknown) < 0.15, (t_known, t_unknown)


def test_unknown_names_cost_a_full_password_check(tmp_path):
    """Without the answer-time padding, an unknown name still costs one bcrypt check at the users' cost."""
    import asyncio

    from labeler.users import LoginPolicy, authenticator

    users = tmp_path / "users.json"
    add_user(users, "alice", "alice-pw", rounds=12)
    check = authenticator(users, LoginPolicy(fail_seconds=0, per_user=100, per_address=100))

    def timed(name: str, password: str) -> tuple[bool, float]:
        t0 = time.perf_counter()
        ok = asyncio.run(check(name, password))
        return ok, time.perf_counter() - t0

    assert timed("alice", "alice-pw")[0] and not timed("alice", "nope")[0]
    t_known = min(timed("alice", "nope")[1] for _ in range(3))
    t_unknown = min(timed("mallory", "nope")[1] for _ in range(3))
    assert not timed("mallory", "alice-pw")[0]
    assert t_unknown > 0.6 * t_known, (t_known, t_unknown)
