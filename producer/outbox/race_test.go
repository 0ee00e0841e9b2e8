//go:build race

package outbox

// raceEnabled scales down the SQLite load tests: the pure-Go SQLite driver
// runs about twenty times slower under the race detector.
const raceEnabled = true
