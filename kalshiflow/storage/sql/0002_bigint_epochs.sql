-- Connection epochs become BIGINT: collectors derive an epoch from wall-clock microseconds at
-- connect so that an id is never reused, even by a restarted actor (a reused epoch would make
-- ON CONFLICT DO NOTHING silently drop the new connection's rows). INTEGER cannot hold that.
ALTER TABLE connection_epochs ALTER COLUMN epoch TYPE BIGINT;
ALTER TABLE book_snapshots ALTER COLUMN epoch TYPE BIGINT;
ALTER TABLE book_deltas ALTER COLUMN epoch TYPE BIGINT;
ALTER TABLE gaps ALTER COLUMN epoch TYPE BIGINT;
ALTER TABLE public_trades ALTER COLUMN epoch TYPE BIGINT;
