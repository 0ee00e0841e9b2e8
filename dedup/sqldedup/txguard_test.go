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
		{"", stmtOther, ""},
		{"SELECT 'ROLLBACK'", stmtOther, ""},
	}
	for _, tc := range cases {
		kind, name := classify(tc.q)
		if kind != tc.kind || name != tc.name {
			t.Errorf("classify(%q) = %d %q, want %d %q", tc.q, kind, name, tc.kind, tc.name)
		}
	}
}
