package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idemq/idemq/admin"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Config configures the console.
type Config struct {
	// Admin is the admin API the console is built on. Required. Give it
	// a Sender to let operators redrive dead letters.
	Admin *admin.Admin
	// Auth is how operators are authenticated. Required: choose
	// Middleware, Token, Basic or Unauthenticated.
	Auth Auth
	// ReadOnly registers no mutating route at all: no redrive, no
	// discard. Defaults to false.
	ReadOnly bool
	// BasePath is the path the console is mounted under, such as
	// "/idemq", for the links it renders; mount the Handler with
	// http.StripPrefix(BasePath, h). Defaults to "" (the root).
	BasePath string
	// Location is the time zone of shown times when the operator's browser
	// has not told its own. Defaults to time.Local.
	Location *time.Location
	// PageSize is the number of rows of a listing page. Defaults to 50; at
	// most 1000.
	PageSize int
	// Gatherer, when set, is the service's metrics registry: the overview
	// then shows the Redis fast path's fallbacks. Defaults to nil.
	Gatherer prometheus.Gatherer
	// Secret keys the form tokens and the token sign-in cookie. Defaults
	// to 32 random bytes per Handler (forms and sign-ins then last as long
	// as the process); set it to keep them across restarts or replicas.
	Secret []byte
	// Logger receives errors the pages show as "internal error". Defaults
	// to slog.Default().
	Logger *slog.Logger
}

// Handler is the console, an http.Handler. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	secret []byte
	mux    *http.ServeMux
	root   http.Handler
	pages  map[string]*pageTemplate
}

// New returns the console over cfg.Admin.
func New(cfg Config) (*Handler, error) {
	if cfg.Admin == nil {
		return nil, errors.New("console: Config.Admin is required")
	}
	if err := cfg.Auth.validate(); err != nil {
		return nil, err
	}
	cfg.BasePath = strings.TrimRight(cfg.BasePath, "/")
	if cfg.BasePath != "" && !strings.HasPrefix(cfg.BasePath, "/") {
		return nil, errors.New("console: BasePath must start with /")
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 50
	}
	if cfg.PageSize > 1000 {
		cfg.PageSize = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, secret: cfg.Secret}
	if len(h.secret) == 0 {
		h.secret = make([]byte, 32)
		if _, err := rand.Read(h.secret); err != nil {
			return nil, err
		}
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	h.pages = pages
	h.routes()
	return h, nil
}

// ReadOnly reports whether the console registers no mutating route.
func (h *Handler) ReadOnly() bool { return h.cfg.ReadOnly }

func (h *Handler) routes() {
	mux := http.NewServeMux()
	h.mux = mux
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))

	app := http.NewServeMux()
	app.HandleFunc("GET /{$}", h.overview)
	app.HandleFunc("GET /dead", h.deadList)
	app.HandleFunc("GET /dead/groups", h.deadGroups)
	app.HandleFunc("GET /dead/{id}", h.deadShow)
	app.HandleFunc("GET /dead/{id}/body", h.deadBody)
	app.HandleFunc("GET /outbox", h.outboxList)
	app.HandleFunc("GET /outbox/show", h.outboxShow)
	app.HandleFunc("GET /attempts", h.attempts)
	app.HandleFunc("GET /keys", h.keys)
	app.HandleFunc("GET /audit", h.audit)
	if !h.cfg.ReadOnly {
		app.HandleFunc("GET /dead/confirm", h.deadConfirm)
		app.HandleFunc("POST /dead/act", h.mutation(h.deadAct))
		app.HandleFunc("GET /outbox/confirm", h.outboxConfirm)
		app.HandleFunc("POST /outbox/act", h.mutation(h.outboxAct))
	}
	if h.cfg.Auth.kind == "token" {
		mux.HandleFunc("GET /login", h.loginPage)
		mux.HandleFunc("POST /login", h.login)
		app.HandleFunc("POST /logout", h.mutation(h.logout))
	}
	mux.Handle("/", h.guard(app))

	// Every POST, sign-in included, is refused when the browser says it
	// comes from another site.
	cop := http.NewCrossOriginProtection()
	h.root = cop.Handler(mux)
}

// ServeHTTP serves the console with its security headers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("Cache-Control", "no-store")
	h.root.ServeHTTP(w, r)
}

func (h *Handler) path(p string) string { return h.cfg.BasePath + p }

func withIdentity(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// Identity returns the operator the console authenticated for a request,
// as its handlers see it, or "".
func Identity(ctx context.Context) string {
	s, _ := ctx.Value(identityKey{}).(string)
	return s
}

// formToken is the token every mutating form carries: a MAC of the
// operator's identity, so a page of one operator cannot be replayed as
// another and a page of another site cannot forge it.
func (h *Handler) formToken(identity string) string {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte("form\x00" + identity))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// mutation wraps a POST handler: it checks the form token, and runs next
// with the operator as the audit log's actor.
func (h *Handler) mutation(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		id := Identity(r.Context())
		if !hmac.Equal([]byte(r.PostFormValue("token")), []byte(h.formToken(id))) {
			http.Error(w, "invalid or missing form token: reload the page and try again", http.StatusForbidden)
			return
		}
		next(w, r.WithContext(admin.WithActor(r.Context(), id)))
	}
}
