#!/bin/sh
set -e
psql "$DATABASE_URL" -c 'TRUNCATE users, orders RESTART IDENTITY CASCADE'
psql "$DATABASE_URL" -f db/seed.sql
