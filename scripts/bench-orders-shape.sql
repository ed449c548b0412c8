-- The `orders` shape of scripts/bench.sh: a shop's four tables of comparable size, built
-- after the restore's tuning and left untuned to it. Accounts (uuid, varchar, a domain,
-- int[], jsonb with NULLs), orders (an enum, the domain, timestamps, real and double
-- precision, a tsvector) with a key, three B-trees (one partial, one on an expression)
-- and a GIN index on the tsvector, order events (a composite key, jsonb) and an audit
-- log (an identity column), two foreign keys and a materialized view. About 1 million
-- rows per unit of :s (psql -v s=N).
CREATE TYPE status AS ENUM ('draft','open','paid','shipped','cancelled');
CREATE DOMAIN money2 AS numeric(12,2) CHECK (VALUE >= 0);
CREATE TABLE accounts (id bigserial PRIMARY KEY, ext uuid NOT NULL UNIQUE, name varchar(80) NOT NULL, email text, active boolean NOT NULL DEFAULT true,
  plan char(1), created date, balance money2, flags int[], meta jsonb);
INSERT INTO accounts (ext, name, email, active, plan, created, balance, flags, meta)
SELECT md5(g::text)::uuid, 'Account ' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'a' || g || '@example.com' END, g % 11 <> 0,
  substr('FBP', 1 + g % 3, 1), '2020-01-01'::date + g % 2000, (g % 100000) / 100.0, ARRAY[g % 3, g % 5],
  CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('tier', g % 5, 'ref', 'r' || g) END
FROM generate_series(1, 60000 * :s) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, status status NOT NULL, total money2, currency char(3) NOT NULL DEFAULT 'EUR',
  placed timestamptz NOT NULL, shipped timestamptz, note varchar(200), discount real, weight double precision, lines smallint, search tsvector);
INSERT INTO orders (account_id, status, total, placed, shipped, note, discount, weight, lines, search)
SELECT 1 + (g::bigint * 7919) % (60000 * :s), (enum_range(NULL::status))[1 + g % 5], (g % 50000) / 100.0, '2024-01-01'::timestamptz + g * interval '17 seconds',
  CASE WHEN g % 3 = 0 THEN '2024-01-02'::timestamptz + g * interval '17 seconds' END, CASE WHEN g % 5 = 0 THEN 'gift ' || md5(g::text) END,
  (g % 20) / 100.0, g * 0.137, (g % 9)::smallint, to_tsvector('simple', 'order ' || g || ' item ' || (g % 97))
FROM generate_series(1, 300000 * :s) g;
CREATE INDEX ON orders (account_id);
CREATE INDEX ON orders (placed) WHERE status <> 'cancelled';
CREATE INDEX ON orders (lower(note));
CREATE INDEX ON orders USING gin (search);
CREATE TABLE order_events (order_id bigint NOT NULL REFERENCES orders, at timestamptz NOT NULL, kind text NOT NULL, payload jsonb, PRIMARY KEY (order_id, at));
INSERT INTO order_events SELECT 1 + g % (300000 * :s), '2024-01-01'::timestamptz + g * interval '1 second', 'k' || g % 13, jsonb_build_object('v', g) FROM generate_series(1, 450000 * :s) g ON CONFLICT DO NOTHING;
CREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, actor text, action text, at timestamptz DEFAULT now(), detail text);
INSERT INTO audit (actor, action, at, detail) SELECT 'user' || g % 500, 'act' || g % 40, '2024-01-01'::timestamptz + g * interval '3 seconds', repeat('x', g % 300) FROM generate_series(1, 200000 * :s) g;
CREATE MATERIALIZED VIEW daily AS SELECT placed::date d, count(*), sum(total) FROM orders GROUP BY 1;
