//! Backups: `VACUUM INTO` / the backup API on SQLite, `pg_dump`/`pg_restore` on
//! PostgreSQL; hourly by timer, retention, checksums, restore.
