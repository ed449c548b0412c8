-- Start over: used by the integration environment only.
DROP SCHEMA public CASCADE;
CREATE SCHEMA public;
