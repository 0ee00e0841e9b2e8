package console

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/idemq/idemq/admin"
)

type pageTemplate struct{ t *template.Template }

// parsePages parses every page with the layout, each on its own so that
// every page defines its own "content".
func parsePages() (map[string]*pageTemplate, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*pageTemplate{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		out[base] = &pageTemplate{t: t}
	}
	return out, nil
}

var funcs = template.FuncMap{
	"join": strings.Join,
	"list": func(s ...string) []string { return s },
	"rawjson": func(b json.RawMessage) string {
		var out bytes.Buffer
		if json.Indent(&out, b, "", "  ") != nil {
			return string(b)
		}
		return out.String()
	},
	// size takes the int64 of a dead letter's whole-body size or the int of
	// an outbox row's.
	"size": func(v any) string {
		var n int64
		switch x := v.(type) {
		case int:
			n = int64(x)
		case int64:
			n = x
		default:
			return fmt.Sprint(v)
		}
		switch {
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		case n >= 1<<10:
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return fmt.Sprintf("%d B", n)
	},
	"short": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		s = s[:n]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return s + "…"
	},
	"dur": func(d time.Duration) string {
		switch {
		case d <= 0:
			return "0s"
		case d < time.Second:
			return d.Round(time.Millisecond).String()
		case d < time.Hour:
			return d.Round(time.Second).String()
		}
		return d.Round(time.Minute).String()
	},
}

// view is what every page template receives.
type view struct {
	Title    string
	Nav      string
	Operator string
	Token    string
	ReadOnly bool
	Sender   bool
	Base     string
	Zone     string
	Data     any
	// Posted is set on pages that answer a POST: the script must not
	// reload them (that would send the form again).
	Posted bool
	loc    *time.Location
}

// Time shows t in the operator's zone.
func (v *view) Time(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.In(v.loc).Format("2006-01-02 15:04:05 MST")
}

// TimeP shows *t in the operator's zone.
func (v *view) TimeP(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return v.Time(*t)
}

// ISO is t in RFC 3339, UTC, for the datetime attribute.
func (v *view) ISO(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Path is a console path under the base path.
func (v *view) Path(p string) string { return v.Base + p }

// Input formats t for a datetime-local input in the operator's zone.
func (v *view) Input(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.In(v.loc).Format("2006-01-02T15:04")
}

const zoneCookie = "idemq_tz"

// zoneName names loc as an IANA name where it can ("Local" says nothing to
// the operator).
func zoneName(loc *time.Location) string {
	if loc.String() != "Local" {
		return loc.String()
	}
	if tz := os.Getenv("TZ"); tz != "" {
		return tz
	}
	if name, _ := time.Now().In(loc).Zone(); name != "" {
		return name
	}
	return "Local"
}

// location is the operator's zone: the one the browser reported, or the
// configured one.
func (h *Handler) location(r *http.Request) *time.Location {
	if c, err := r.Cookie(zoneCookie); err == nil && c.Value != "" && len(c.Value) < 64 {
		if name, err := url.QueryUnescape(c.Value); err == nil {
			if loc, err := time.LoadLocation(name); err == nil {
				return loc
			}
		}
	}
	return h.cfg.Location
}

func (h *Handler) newView(r *http.Request, nav, title string, data any) *view {
	id := Identity(r.Context())
	loc := h.location(r)
	return &view{Title: title, Nav: nav, Operator: id, Token: h.formToken(id), ReadOnly: h.cfg.ReadOnly,
		Sender: h.cfg.Admin.HasSender(), Base: h.cfg.BasePath, Zone: zoneName(loc), Data: data,
		Posted: r.Method == http.MethodPost, loc: loc}
}

// render writes page with status.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, page string, v *view) {
	var buf bytes.Buffer
	if err := h.pages[page].t.ExecuteTemplate(&buf, "layout.html", v); err != nil {
		h.cfg.Logger.Error("console: render", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type problem struct {
	Status  int
	Message string
}

// fail shows an error page; errors of the admin API that are the
// operator's (not found, empty filter) show their text, others are logged
// and shown as "internal error".
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	p := problem{Status: http.StatusInternalServerError, Message: "internal error (see the service's log)"}
	var bad badRequest
	switch {
	case errors.Is(err, admin.ErrNotFound):
		p = problem{Status: http.StatusNotFound, Message: "Not found."}
	case errors.Is(err, admin.ErrNoTable):
		p = problem{Status: http.StatusNotFound, Message: "This database has no such table: the component is not in use, or idemq migrate has not run."}
	case errors.Is(err, admin.ErrEmptyFilter):
		p = problem{Status: http.StatusBadRequest, Message: "The selection is empty: choose items or a filter."}
	case errors.Is(err, admin.ErrNoSender):
		p = problem{Status: http.StatusBadRequest, Message: "Redrive is not available: the console has no sender to publish with."}
	case errors.As(err, &bad):
		p = problem{Status: http.StatusBadRequest, Message: bad.msg}
	default:
		h.cfg.Logger.Error("console", "path", r.URL.Path, "err", err)
	}
	h.render(w, r, p.Status, "problem", h.newView(r, "", "Error", p))
}

type badRequest struct{ msg string }

func (b badRequest) Error() string { return b.msg }

func bad(format string, args ...any) error { return badRequest{fmt.Sprintf(format, args...)} }

// body is a message body prepared for the three views.
type body struct {
	Size      int
	Shown     int
	Truncated bool
	Mode      string
	ValidUTF8 bool
	Text      string
	IsJSON    bool
	JSON      string
	Hex       string
	Raw       string
	Self      string
}

const (
	maxTextShown = 256 << 10
	maxHexShown  = 16 << 10
)

// newBody prepares b for the view mode; self is the page's URL ending in
// "?" or "&", raw the download link or "".
func newBody(b []byte, mode, self, raw string) body {
	out := body{Size: len(b), Mode: mode, ValidUTF8: utf8.Valid(b), Raw: raw, Self: self}
	if json.Valid(b) {
		out.IsJSON = true
	}
	switch mode {
	case "hex":
		shown := b[:min(len(b), maxHexShown)]
		out.Shown, out.Truncated = len(shown), len(shown) < len(b)
		out.Hex = hex.Dump(shown)
	case "json":
		if out.IsJSON && len(b) <= 4*maxTextShown {
			var buf bytes.Buffer
			if json.Indent(&buf, b, "", "  ") == nil {
				s := buf.String()
				out.Shown = len(b)
				if len(s) > maxTextShown {
					s, out.Truncated = s[:maxTextShown], true
				}
				out.JSON = strings.ToValidUTF8(s, "\uFFFD")
				break
			}
		}
		out.Mode = "text"
		fallthrough
	default:
		out.Mode = "text"
		shown := b[:min(len(b), maxTextShown)]
		out.Shown, out.Truncated = len(shown), len(shown) < len(b)
		out.Text = strings.ToValidUTF8(string(shown), "\uFFFD")
	}
	return out
}

func formInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
