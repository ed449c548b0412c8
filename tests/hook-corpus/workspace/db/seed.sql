INSERT INTO users (email, name) VALUES ('ada@example.com', 'Ada'), ('alan@example.com', 'Alan');
INSERT INTO plans (code, price_cents) VALUES ('free', 0), ('pro', 1200);
