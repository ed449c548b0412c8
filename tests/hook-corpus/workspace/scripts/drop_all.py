"""Drops every table of the development database (used by `make reset`)."""
from sqlalchemy import create_engine, text

engine = create_engine("postgresql://app@localhost/app")
with engine.begin() as conn:
    conn.execute(text("DROP SCHEMA public CASCADE"))
    conn.execute(text("CREATE SCHEMA public"))
