// Package sqlclock holds the SQL expressions that read a database's clock
// as Unix time, for the statements that compare leases, deadlines and
// retention with the database clock rather than the host's.
//
// On MySQL/MariaDB the clock is read as UTC_TIMESTAMP, never through
// UNIX_TIMESTAMP(NOW()): NOW() is local time in the session's time zone,
// and in a zone with daylight saving time (the server's SYSTEM zone, or a
// DSN's time_zone) the hour repeated when clocks go back maps to one Unix
// time, so the clock read that way jumps an hour forward and then back.
package sqlclock

// MySQLMillis is a MySQL/MariaDB expression for the database clock in Unix
// milliseconds, whatever the session's time zone.
const MySQLMillis = "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED)"

// MySQLMicros is a MySQL/MariaDB expression for the database clock in Unix
// microseconds, whatever the session's time zone.
const MySQLMicros = "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) AS SIGNED)"
