"""Database engines: SQLite (WAL, busy timeout, `BEGIN IMMEDIATE` for writes so one writer at a
time holds the lock instead of failing on upgrade) or PostgreSQL, and Alembic migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


POOL_SIZE = 40
"""Connections an engine keeps open: one per thread of the API's thread pool (anyio's 40), so a
burst of requests (fifty dashboards opening at once) does not open and close connections past
a smaller pool's size while it is answered."""


def make_engine(url: str) -> Engine:
    """An engine for `url`; on SQLite, a write transaction is begun with `BEGIN IMMEDIATE`
    when the connection carries the `immediate` execution option."""
    if not is_sqlite(url):
        return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=10)
    db = make_url(url).database
    pool = {}
    if db and db != ":memory:":  # a file: a pool of connections (an in-memory database has its one)
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": POOL_SIZE, "max_overflow": 10}
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")

    return engine


def alembic_config(url: str) -> Config:
    """Alembic config pointing at the migrations shipped in the package."""
    cfg = Config(str(PACKAGE_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(PACKAGE_DIR / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Apply every pending migration (run at server start; idempotent)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(726354)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
