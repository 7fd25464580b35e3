-- NOTIFY inside the appending transaction takes a database-wide lock at
-- commit and holds it through the WAL flush: every append then commits one
-- at a time (no group commit), ~1,000/s on the development machine. The
-- service now notifies after its commits, from outside them
-- (`app::notify_appends`); subscribers also poll, so appends made by other
-- writers are still picked up.
DROP TRIGGER events_appended ON events;
DROP FUNCTION notify_events_appended();
