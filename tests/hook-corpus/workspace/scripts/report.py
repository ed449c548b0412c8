import os
import psycopg

with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    for row in conn.execute("SELECT plan, count(*) FROM users GROUP BY plan"):
        print(*row)
