"""Fixtures for the labeler tests: a real PostgreSQL server on loopback, a fresh database per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from labfix import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def pg_url():
    """A throw-away PostgreSQL 15 server on loopback (initdb + pg_ctl), run as `postgres` when we are root."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="vrlhf-pg-"))  # not under pytest's root-only tmp: postgres must reach it
    data, port = base / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        os.chmod(base, 0o700)

    def run(*cmd):
        subprocess.run(as_user + list(cmd), check=True, capture_output=True, cwd=base)

    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
        f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=200", "start")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_store_url(pg_url):
    """A fresh database on the shared server for each test."""
    import sqlalchemy as sa

    name = f"t{time.time_ns()}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"


CHROMIUM = "/usr/bin/chromium"  # Debian's; never `playwright install`


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
