package admin

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

var (
	sigQuoted = regexp.MustCompile(`"[^"]*"|'[^']*'|` + "`[^`]*`")
	sigUUID   = regexp.MustCompile(`(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`)
	sigHex    = regexp.MustCompile(`(?i)\b(0x)?[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*\b|\b(0x)?[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*\b`)
	sigNumber = regexp.MustCompile(`[0-9]+([.:][0-9]+)*`)
	sigSpace  = regexp.MustCompile(`\s+`)
)

const maxSignatureLen = 200

// Signature returns the error signature of a dead letter's reason: the
// text with the parts that differ between occurrences of one failure
// (quoted values, UUIDs, hex IDs, numbers, addresses) replaced by
// placeholders, so that dead letters that failed the same way group
// together, as [Admin.DeadGroups] does.
//
//	charge order 1234: payment API "timeout" after 30s
//	-> charge order #: payment API "…" after #s
func Signature(reason string) string {
	s := sigQuoted.ReplaceAllStringFunc(reason, func(q string) string { return q[:1] + "…" + q[len(q)-1:] })
	s = sigUUID.ReplaceAllString(s, "<uuid>")
	s = sigHex.ReplaceAllString(s, "<hex>")
	s = sigNumber.ReplaceAllString(s, "#")
	s = strings.TrimSpace(sigSpace.ReplaceAllString(s, " "))
	if len(s) > maxSignatureLen {
		s = s[:maxSignatureLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	if s == "" {
		s = "(no error text)"
	}
	return s
}
