-- The `star` shape of scripts/bench.sh: a decision-support schema shaped like TPC-H's (not
-- its generator or its data): a fact table of line items holding about 70% of the rows,
-- with a composite key, two secondary indexes and foreign keys to orders and to a
-- composite key of part suppliers; orders with two indexes and a key to customers; the
-- dimensions (parts, suppliers, customers, nations, regions) with theirs.
-- :s (psql -v s=N) is the size: N x 60,000 line items, N x 15,000 orders.
CREATE TABLE region (r_regionkey int PRIMARY KEY, r_name text NOT NULL, r_comment text);
CREATE TABLE nation (n_nationkey int PRIMARY KEY, n_name text NOT NULL, n_regionkey int NOT NULL REFERENCES region, n_comment text);
CREATE TABLE supplier (s_suppkey int PRIMARY KEY, s_name text, s_address text, s_nationkey int REFERENCES nation,
  s_phone text, s_acctbal numeric(15,2), s_comment text);
CREATE TABLE part (p_partkey int PRIMARY KEY, p_name text, p_mfgr text, p_brand text, p_type text, p_size int,
  p_container text, p_retailprice numeric(15,2), p_comment text);
CREATE TABLE partsupp (ps_partkey int REFERENCES part, ps_suppkey int REFERENCES supplier, ps_availqty int,
  ps_supplycost numeric(15,2), ps_comment text, PRIMARY KEY (ps_partkey, ps_suppkey));
CREATE TABLE customer (c_custkey int PRIMARY KEY, c_name text, c_address text, c_nationkey int REFERENCES nation,
  c_phone text, c_acctbal numeric(15,2), c_mktsegment text, c_comment text);
CREATE TABLE orders (o_orderkey bigint PRIMARY KEY, o_custkey int REFERENCES customer, o_orderstatus char(1),
  o_totalprice numeric(15,2), o_orderdate date, o_orderpriority text, o_clerk text, o_shippriority int, o_comment text);
CREATE TABLE lineitem (l_orderkey bigint REFERENCES orders, l_partkey int, l_suppkey int, l_linenumber int,
  l_quantity numeric(15,2), l_extendedprice numeric(15,2), l_discount numeric(15,2), l_tax numeric(15,2),
  l_returnflag char(1), l_linestatus char(1), l_shipdate date, l_commitdate date, l_receiptdate date,
  l_shipinstruct text, l_shipmode text, l_comment text, PRIMARY KEY (l_orderkey, l_linenumber),
  FOREIGN KEY (l_partkey, l_suppkey) REFERENCES partsupp);

INSERT INTO region SELECT i, 'REGION' || i, md5(i::text) FROM generate_series(0, 4) i;
INSERT INTO nation SELECT i, 'NATION' || i, i % 5, md5(i::text) FROM generate_series(0, 24) i;
INSERT INTO supplier SELECT i, 'Supplier#' || i, md5(i::text), i % 25, '12-345-' || i,
  (i * 7919 % 1000000) / 100.0, repeat(md5(i::text), 2) FROM generate_series(1, 100 * :s) i;
INSERT INTO part SELECT i, 'part ' || md5(i::text), 'Manufacturer#' || (i % 5), 'Brand#' || (i % 25),
  'TYPE ' || (i % 150), i % 50, 'CONT' || (i % 40), 900 + i % 1000, md5(i::text) FROM generate_series(1, 2000 * :s) i;
INSERT INTO partsupp SELECT p, ((p + j * 7) % (100 * :s)) + 1, (p * 31 + j) % 9999, ((p * 17 + j) % 100000) / 100.0,
  repeat(md5(p::text || j), 3) FROM generate_series(1, 2000 * :s) p, generate_series(0, 3) j;
INSERT INTO customer SELECT i, 'Customer#' || i, md5(i::text), i % 25, '12-' || i, (i * 7919 % 1000000) / 100.0,
  'SEG' || (i % 5), repeat(md5(i::text), 2) FROM generate_series(1, 1500 * :s) i;
INSERT INTO orders SELECT i, (i % (1500 * :s)) + 1, 'O', (i::bigint * 7919 % 50000000) / 100.0,
  date '1992-01-01' + (i % 2400), (i % 5) || '-PRIO', 'Clerk#' || (i % 1000), 0, md5(i::text) || md5((i + 1)::text)
  FROM generate_series(1, 15000 * :s) i;
INSERT INTO lineitem SELECT o, ((o * 7 + l) % (2000 * :s)) + 1, ((((o * 7 + l) % (2000 * :s)) + 1) % (100 * :s)) + 1, l,
  1 + (o + l) % 50, ((o * 31 + l) % 10000000) / 100.0, ((o + l) % 10) / 100.0, ((o + l) % 8) / 100.0, 'N', 'O',
  date '1992-01-01' + ((o + l) % 2500), date '1992-01-01' + ((o + l) % 2500) + 30,
  date '1992-01-01' + ((o + l) % 2500) + 5, 'DELIVER IN PERSON', 'TRUCK', md5((o * l)::text)
  FROM generate_series(1, 15000 * :s) o, generate_series(1, 4) l;
CREATE INDEX ON lineitem (l_shipdate);
CREATE INDEX ON lineitem (l_partkey, l_suppkey);
CREATE INDEX ON orders (o_custkey);
CREATE INDEX ON orders (o_orderdate);
