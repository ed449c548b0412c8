BEGIN;
DELETE FROM sessions;
DELETE FROM password_resets WHERE created_at < now() - interval '1 day';
COMMIT;
