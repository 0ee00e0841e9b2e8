// Package console is idemq's web console: an [http.Handler] over the
// [admin] API that an operator opens to see what is wrong and fix it, and
// that a service mounts inside its own HTTP server (or that `idemq
// console` serves on its own).
//
//	h, err := console.New(console.Config{
//		Admin: adm,
//		Auth:  console.Middleware(myAuth, func(r *http.Request) string { return userOf(r) }),
//	})
//	mux.Handle("/idemq/", http.StripPrefix("/idemq", h)) // with Config.BasePath "/idemq"
//
// Pages: an overview (per consumer group: processed, in flight, retrying,
// stale attempts, dead keys, dead letters waiting; the outbox backlog and
// its oldest pending age; the Redis fast path's fallbacks when
// Config.Gatherer is given), dead letters (filters, paging, grouped by
// error signature, one in full with its body as text, JSON or hex, its
// properties and error history), redrive and discard (one, the selected,
// or all matching a filter), the outbox (pending, failed, sent; redrive and
// discard of failed rows), stale attempts, a dedup key lookup and the
// audit log. Times are shown in the operator's zone: the one the browser
// reports, else Config.Location. Pages are server-rendered with
// html/template from embedded files; the one small script is optional.
//
// What it guarantees:
//
//   - Authentication is a required choice: the service's own middleware
//     ([Middleware]), a shared token ([Token]), basic authentication
//     ([Basic]), or explicitly none ([Unauthenticated], meant for a
//     loopback address). [New] refuses a Config without one.
//   - In read-only mode (Config.ReadOnly) no mutating route is registered
//     at all: a POST finds nothing.
//   - Every mutation is a POST that passes Go's http.CrossOriginProtection
//     (a request the browser marks as cross-site is refused) and carries a
//     form token bound to the operator (a MAC under Config.Secret). Each
//     runs through the admin API with the operator's identity as the
//     actor, so it is written to the audit log.
//   - A bulk action shows how many items it will touch before the
//     operator confirms, and the confirmed count travels with the POST: if
//     the selection matches a different number by then, nothing is done
//     and the confirmation is shown again with the new count. (Items that
//     change between that check and the action itself are handled as the
//     admin API handles them: already redriven or gone is skipped.)
//   - Everything that comes from messages (bodies, properties, error
//     texts, keys, IDs) is escaped by html/template for the context it
//     lands in; bodies are shown as text (invalid UTF-8 replaced), indented
//     JSON or a hex dump, and cut to a bounded size, so a 10 MB body still
//     renders; the raw body is only offered as a download.
//   - Every response carries a Content-Security-Policy that allows no
//     inline script and no framing (frame-ancestors 'none'), along with
//     X-Content-Type-Options: nosniff and X-Frame-Options: DENY.
//
// What it does not do: it does not serve TLS (put it behind the service's
// TLS or a proxy when it leaves the host), and it does not rate-limit
// sign-in attempts.
package console
