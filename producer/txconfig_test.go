package producer

import (
	"strings"
	"testing"

	"github.com/idemq/idemq/internal/testenv"
	"github.com/idemq/idemq/msgid"
)

func TestTxConfigValidation(t *testing.T) {
	g, _ := msgid.NewGenerator(msgid.FixedNode(1), msgid.GeneratorConfig{})
	base := Config{NameServers: []string{"127.0.0.1:9876"}, IDSource: g}
	db := testenv.OpenSQLite(t)
	for _, tc := range []struct {
		name string
		cfg  TxConfig
		want string
	}{
		{"no DB", TxConfig{Config: base}, "DB"},
		{"bad prefix", TxConfig{Config: base, DB: db, TablePrefix: "X"}, "table prefix"},
		{"negative grace", TxConfig{Config: base, DB: db, CheckGrace: -1}, "CheckGrace"},
		{"no IDSource", TxConfig{Config: Config{NameServers: base.NameServers}, DB: db}, "IDSource"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTransactionProducer(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
