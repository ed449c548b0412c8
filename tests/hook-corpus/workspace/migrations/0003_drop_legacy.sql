ALTER TABLE orders DROP COLUMN legacy_ref;
DROP TABLE legacy_orders;
