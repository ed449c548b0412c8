-- The `app` shape of scripts/bench.sh: an application's schema of 20 tables of comparable
-- size (none dominant), with secondary indexes, foreign keys, an enum, a domain, a
-- generated column, jsonb, arrays, bytea and large objects. About 100,000 rows per unit
-- of :s (psql -v s=N).
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'returned');
CREATE DOMAIN money_cents AS bigint CHECK (VALUE >= 0);

CREATE TABLE categories (id int PRIMARY KEY, name text NOT NULL, parent int REFERENCES categories);
CREATE TABLE suppliers (id int PRIMARY KEY, name text, country char(2), contact jsonb);
CREATE TABLE products (id int PRIMARY KEY, category int REFERENCES categories, supplier int REFERENCES suppliers,
  sku text UNIQUE, name text, price money_cents, tags text[], attrs jsonb);
CREATE TABLE customers (id int PRIMARY KEY, email text UNIQUE, name text, created timestamptz, prefs jsonb);
CREATE TABLE addresses (id int PRIMARY KEY, customer int REFERENCES customers, line1 text, city text, zip text);
CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, status order_status,
  total money_cents, tax money_cents GENERATED ALWAYS AS (total / 5) STORED, placed timestamptz);
CREATE TABLE order_items (id int PRIMARY KEY, order_id int REFERENCES orders, product int REFERENCES products,
  qty int, price money_cents);
CREATE TABLE payments (id int PRIMARY KEY, order_id int REFERENCES orders, amount money_cents, provider text, ref text);
CREATE TABLE shipments (id int PRIMARY KEY, order_id int REFERENCES orders, address int REFERENCES addresses,
  carrier text, tracking text, shipped timestamptz);
CREATE TABLE reviews (id int PRIMARY KEY, product int REFERENCES products, customer int REFERENCES customers,
  stars smallint CHECK (stars BETWEEN 1 AND 5), body text);
CREATE TABLE carts (id int PRIMARY KEY, customer int REFERENCES customers, updated timestamptz);
CREATE TABLE cart_items (id int PRIMARY KEY, cart int REFERENCES carts, product int REFERENCES products, qty int);
CREATE TABLE sessions (id uuid PRIMARY KEY, customer int REFERENCES customers, data bytea, expires timestamptz);
CREATE TABLE events (id bigint PRIMARY KEY, kind text, payload jsonb, at timestamptz);
CREATE TABLE audit_log (id bigint PRIMARY KEY, actor text, action text, target text, at timestamptz);
CREATE TABLE invoices (id int PRIMARY KEY, order_id int REFERENCES orders, number text UNIQUE, issued date);
CREATE TABLE invoice_lines (id int PRIMARY KEY, invoice int REFERENCES invoices, text text, amount money_cents);
CREATE TABLE coupons (id int PRIMARY KEY, code text UNIQUE, percent int, valid daterange);
CREATE TABLE inventory (product int REFERENCES products, warehouse int, qty int, PRIMARY KEY (product, warehouse));
CREATE TABLE documents (id int PRIMARY KEY, customer int REFERENCES customers, title text, file oid);

INSERT INTO categories SELECT g, 'category ' || g, CASE WHEN g > 10 THEN 1 + g % 10 END FROM generate_series(1, 100 * :s) g;
INSERT INTO suppliers SELECT g, 'supplier ' || g, 'DE', jsonb_build_object('phone', g, 'mail', 's' || g || '@example.com') FROM generate_series(1, 200 * :s) g;
INSERT INTO products SELECT g, 1 + g % (100 * :s), 1 + g % (200 * :s), 'SKU-' || g, 'product ' || md5(g::text), 100 + g % 9000,
  ARRAY['t' || g % 7, 't' || g % 11], jsonb_build_object('w', g % 500, 'c', md5(g::text)) FROM generate_series(1, 4000 * :s) g;
INSERT INTO customers SELECT g, 'c' || g || '@example.com', 'customer ' || md5(g::text), '2024-01-01'::timestamptz + g * interval '1 minute',
  jsonb_build_object('news', g % 2 = 0, 'lang', 'en') FROM generate_series(1, 6000 * :s) g;
INSERT INTO addresses SELECT g, 1 + g % (6000 * :s), g || ' Main Street', 'City ' || g % 300, lpad((g % 99999)::text, 5, '0') FROM generate_series(1, 7000 * :s) g;
INSERT INTO orders (id, customer, status, total, placed) SELECT g, 1 + g % (6000 * :s), (ARRAY['new','paid','shipped','returned'])[1 + g % 4]::order_status,
  1000 + g % 50000, '2025-01-01'::timestamptz + g * interval '30 seconds' FROM generate_series(1, 9000 * :s) g;
INSERT INTO order_items SELECT g, 1 + g % (9000 * :s), 1 + g % (4000 * :s), 1 + g % 5, 100 + g % 9000 FROM generate_series(1, 12000 * :s) g;
INSERT INTO payments SELECT g, 1 + g % (9000 * :s), 1000 + g % 50000, (ARRAY['card','bank','wallet'])[1 + g % 3], md5(g::text) FROM generate_series(1, 8000 * :s) g;
INSERT INTO shipments SELECT g, 1 + g % (9000 * :s), 1 + g % (7000 * :s), 'carrier ' || g % 5, upper(md5(g::text)), '2025-02-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 6000 * :s) g;
INSERT INTO reviews SELECT g, 1 + g % (4000 * :s), 1 + g % (6000 * :s), 1 + g % 5, repeat('good product ', 1 + g % 8) FROM generate_series(1, 5000 * :s) g;
INSERT INTO carts SELECT g, 1 + g % (6000 * :s), now() - g * interval '1 hour' FROM generate_series(1, 4000 * :s) g;
INSERT INTO cart_items SELECT g, 1 + g % (4000 * :s), 1 + g % (4000 * :s), 1 + g % 3 FROM generate_series(1, 6000 * :s) g;
INSERT INTO sessions SELECT md5(g::text)::uuid, 1 + g % (6000 * :s), decode(md5(g::text) || md5((g + 1)::text), 'hex'), now() + g * interval '1 minute' FROM generate_series(1, 5000 * :s) g;
INSERT INTO events SELECT g, (ARRAY['view','click','buy'])[1 + g % 3], jsonb_build_object('product', g % 4000, 'ua', md5(g::text), 'ms', g % 900), '2025-03-01'::timestamptz + g * interval '1 second' FROM generate_series(1, 9000 * :s) g;
INSERT INTO audit_log SELECT g, 'user' || g % 50, (ARRAY['create','update','delete'])[1 + g % 3], 'orders/' || g, '2025-03-01'::timestamptz + g * interval '2 seconds' FROM generate_series(1, 7000 * :s) g;
INSERT INTO invoices SELECT g, 1 + g % (9000 * :s), 'INV-' || g, '2025-01-01'::date + g % 365 FROM generate_series(1, 6000 * :s) g;
INSERT INTO invoice_lines SELECT g, 1 + g % (6000 * :s), 'line ' || md5(g::text), 100 + g % 9000 FROM generate_series(1, 8000 * :s) g;
INSERT INTO coupons SELECT g, 'CODE' || g, 5 + g % 30, daterange('2025-01-01'::date + g % 300, '2025-12-31') FROM generate_series(1, 1000 * :s) g;
INSERT INTO inventory SELECT p, w, (p * w) % 100 FROM generate_series(1, 1000 * :s) p, generate_series(1, 3) w;
INSERT INTO documents SELECT g, 1 + g % (6000 * :s), 'document ' || g, CASE WHEN g <= 50 THEN lo_from_bytea(0, convert_to(repeat('page ' || g, 200), 'UTF8')) END FROM generate_series(1, 2000 * :s) g;

CREATE INDEX ON products (category);
CREATE INDEX ON products USING gin (tags);
CREATE INDEX ON customers (created);
CREATE INDEX ON addresses (customer);
CREATE INDEX ON orders (customer);
CREATE INDEX ON orders (placed);
CREATE INDEX ON order_items (order_id);
CREATE INDEX ON order_items (product);
CREATE INDEX ON payments (order_id);
CREATE INDEX ON shipments (order_id);
CREATE INDEX ON reviews (product);
CREATE INDEX ON cart_items (cart);
CREATE INDEX ON sessions (customer);
CREATE INDEX ON events (at);
CREATE INDEX ON events USING gin (payload);
CREATE INDEX ON audit_log (target);
CREATE INDEX ON invoice_lines (invoice);
