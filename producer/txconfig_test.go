package producer

import (
	"strings"
	"testing"
)

func TestTxConfigValidation(t *testing.T) {
	g, _ := NewIDGenerator(FixedNode(1), IDConfig{})
	base := Config{NameServers: []string{"127.0.0.1:9876"}, IDs: g}
	db := databases()[0].open(t)
	for _, tc := range []struct {
		name string
		cfg  TxConfig
		want string
	}{
		{"no DB", TxConfig{Config: base}, "DB"},
		{"bad prefix", TxConfig{Config: base, DB: db, TablePrefix: "X"}, "table prefix"},
		{"negative grace", TxConfig{Config: base, DB: db, CheckGrace: -1}, "CheckGrace"},
		{"no IDs", TxConfig{Config: Config{NameServers: base.NameServers}, DB: db}, "IDs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTransactionProducer(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
