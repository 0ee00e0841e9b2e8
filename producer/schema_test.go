package producer

import (
	"strings"
	"testing"
)

func TestSchema(t *testing.T) {
	for _, d := range []string{"postgres", "mysql", "sqlite"} {
		s, err := Schema(d, "acme_")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(s, "acme_node_leases") || !strings.Contains(s, "acme_tx_records") || strings.Contains(s, "idemq_") {
			t.Errorf("%s schema not re-prefixed:\n%s", d, s)
		}
	}
	if _, err := Schema("oracle", ""); err == nil {
		t.Error("unknown dialect accepted")
	}
	if _, err := Schema("postgres", "Bad"); err == nil {
		t.Error("bad prefix accepted")
	}
}
