package sqldedup

import "testing"

func TestClassifyStatement(t *testing.T) {
	cases := []struct {
		q    string
		kind stmtKind
		name string
	}{
		{"INSERT INTO t VALUES (1)", stmtOther, ""},
		{"  savepoint sp1", stmtSavepoint, "SP1"},
		{"SAVEPOINT sp123456789", stmtSavepoint, "SP123456789"},
		{"ROLLBACK TO SAVEPOINT sp1", stmtRollbackTo, "SP1"},
		{"rollback to sp1;", stmtRollbackTo, "SP1"},
		{"ROLLBACK TRANSACTION TO SAVEPOINT sp1", stmtRollbackTo, "SP1"},
		{"RELEASE SAVEPOINT sp1", stmtRelease, "SP1"},
		{"RELEASE sp1", stmtRelease, "SP1"},
		{"ROLLBACK", stmtEndTx, ""},
		{"commit;", stmtEndTx, ""},
		{"BEGIN", stmtEndTx, ""},
		{"START TRANSACTION", stmtEndTx, ""},
		{"END", stmtEndTx, ""},
		{"PREPARE TRANSACTION 'pay-1'", stmtEndTx, ""},
		{"COMMIT PREPARED 'pay-1'", stmtEndTx, ""},
		{"PREPARE q AS SELECT 1", stmtOther, ""},
		{"xa start 'x'", stmtEndTx, ""},
		{"XA COMMIT 'x'", stmtEndTx, ""},
		{"", stmtOther, ""},
		{"SELECT 'ROLLBACK'", stmtOther, ""},
		{"/* app */ COMMIT", stmtEndTx, ""},
		{"-- app\n  rollback", stmtEndTx, ""},
		{"# app\nBEGIN", stmtEndTx, ""},
		{"/*!40101 COMMIT */", stmtEndTx, ""},
		{"/* a */ /* b */ SAVEPOINT sp1", stmtSavepoint, "SP1"},
		{"/* unterminated COMMIT", stmtOther, ""},
		{"CREATE TABLE t (k INT)", stmtImplicitCommit, ""},
		{"create temporary table t (k int)", stmtOther, ""},
		{"CREATE OR REPLACE TEMPORARY TABLE t (k INT)", stmtOther, ""},
		{"DROP TEMPORARY TABLE t", stmtOther, ""},
		{"DROP TABLE t", stmtImplicitCommit, ""},
		{"ALTER TABLE t ADD COLUMN c INT", stmtImplicitCommit, ""},
		{"TRUNCATE t", stmtImplicitCommit, ""},
		{"LOCK TABLES t WRITE", stmtImplicitCommit, ""},
		{"set session autocommit = 1", stmtImplicitCommit, ""},
		{"SET @@autocommit=0", stmtImplicitCommit, ""},
		{"SET LOCAL lock_timeout = '1s'", stmtOther, ""},
		{"LOAD INDEX INTO CACHE t", stmtImplicitCommit, ""},
		{"LOAD DATA INFILE 'x' INTO TABLE t", stmtOther, ""},
		{"START SLAVE", stmtImplicitCommit, ""},
		{"SELECT * FROM t WHERE c = 'CREATE'", stmtOther, ""},
	}
	for _, tc := range cases {
		kind, name := classify(tc.q)
		if kind != tc.kind || name != tc.name {
			t.Errorf("classify(%q) = %d %q, want %d %q", tc.q, kind, name, tc.kind, tc.name)
		}
	}
}
