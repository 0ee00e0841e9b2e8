package admin_test

import "github.com/idemq/idemq/internal/sqlscript"

func splitSQL(s string) []string { return sqlscript.Split(s) }
