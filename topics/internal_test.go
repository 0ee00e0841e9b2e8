package topics

import (
	"encoding/json"
	"testing"
)

// The Java name server writes brokerAddrs with unquoted integer keys.
func TestUnquotedKeys(t *testing.T) {
	body := []byte(`{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},"brokerName":"broker-a","cluster":"DefaultCluster"}},"clusterAddrTable":{"DefaultCluster":["broker-a"]}}`)
	var v map[string]any
	if err := json.Unmarshal(unquotedKey.ReplaceAll(body, []byte(`$1"$2":`)), &v); err != nil {
		t.Fatal(err)
	}
	addrs := v["brokerAddrTable"].(map[string]any)["broker-a"].(map[string]any)["brokerAddrs"].(map[string]any)
	if addrs["0"] != "10.0.0.1:10911" || addrs["1"] != "10.0.0.2:10911" {
		t.Fatalf("addrs %v", addrs)
	}
}
