// Package testenv gives idemq's tests the real servers that scripts/test
// starts: PostgreSQL, MariaDB (MySQL protocol) and Redis, plus an embedded
// SQLite database, unique table and key prefixes so tests sharing one server
// never see each other's data, a TCP proxy for fault injection, and helpers
// that kill a live database connection.
//
// Servers are found through environment variables, set by scripts/test:
//
//	IDEMQ_POSTGRES_DSN  e.g. host=127.0.0.1 port=5432 user=postgres password=postgres dbname=idemq_test sslmode=disable
//	IDEMQ_MYSQL_DSN     e.g. idemq:idemq@tcp(127.0.0.1:3306)/idemq_test?parseTime=true&interpolateParams=true&loc=UTC
//	IDEMQ_REDIS_ADDR    e.g. 127.0.0.1:6379
//
// When a variable is unset, a test that needs that server is skipped with a
// reason, except under CI=true, where it fails: CI must never pass by
// skipping. A variable that is set but names a server that cannot be reached
// always fails the test.
//
// testenv never mocks a server. Tables and keys that tests create are left
// in the throwaway test databases unless a test asks for cleanup
// ([DropTables]; [KeyPrefix] deletes its Redis keys).
package testenv

import (
	"os"
	"testing"
)

// Names of the environment variables that locate the test servers.
const (
	// EnvPostgresDSN holds a PostgreSQL DSN in the key=value form pgx accepts.
	EnvPostgresDSN = "IDEMQ_POSTGRES_DSN"
	// EnvMySQLDSN holds a go-sql-driver/mysql DSN; it should set
	// parseTime=true and loc=UTC.
	EnvMySQLDSN = "IDEMQ_MYSQL_DSN"
	// EnvRedisAddr holds a Redis host:port.
	EnvRedisAddr = "IDEMQ_REDIS_ADDR"
)

// PostgresDSN returns the DSN of the test PostgreSQL database from
// IDEMQ_POSTGRES_DSN. If it is unset the test is skipped, or fails when
// CI=true.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	return lookup(t, EnvPostgresDSN, "PostgreSQL")
}

// MySQLDSN returns the DSN of the test MySQL/MariaDB database from
// IDEMQ_MYSQL_DSN. If it is unset the test is skipped, or fails when
// CI=true.
func MySQLDSN(t testing.TB) string {
	t.Helper()
	return lookup(t, EnvMySQLDSN, "MariaDB")
}

// RedisAddr returns the host:port of the test Redis server from
// IDEMQ_REDIS_ADDR. If it is unset the test is skipped, or fails when
// CI=true.
func RedisAddr(t testing.TB) string {
	t.Helper()
	return lookup(t, EnvRedisAddr, "Redis")
}

// InCI reports whether the tests run under CI (CI=true), where a missing
// server is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

func lookup(t testing.TB, env, server string) string {
	t.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	if InCI() {
		t.Fatalf("%s not set and CI=true: this test needs %s and CI must not skip it; run the suite through scripts/test, which starts %s and sets %s", env, server, server, env)
	}
	t.Skipf("%s not set: run scripts/test to start %s", env, server)
	return ""
}
