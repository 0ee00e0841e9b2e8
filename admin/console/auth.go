package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
)

// Auth is how the console knows who the operator is. It is a required
// choice, made with one of [Middleware], [Token], [Basic] or
// [Unauthenticated]; the zero Auth is refused by [New].
type Auth struct {
	kind     string
	mw       func(http.Handler) http.Handler
	identity func(*http.Request) string
	token    string
	tokenID  string
	users    map[string]string
	realm    string
}

// Middleware authenticates with the service's own middleware: mw guards
// every route of the console (it rejects the requests it does not
// authenticate), and identity names the operator of a request mw let
// through, for the audit log. Both are required.
func Middleware(mw func(http.Handler) http.Handler, identity func(*http.Request) string) Auth {
	return Auth{kind: "middleware", mw: mw, identity: identity}
}

// Token authenticates with one shared secret. A browser signs in once on
// the console's sign-in page and then carries an HttpOnly, SameSite=Strict
// cookie; scripts send "Authorization: Bearer <token>". name is the
// operator identity the audit log records for this token (defaults to
// "token").
func Token(name, token string) Auth {
	if name == "" {
		name = "token"
	}
	return Auth{kind: "token", token: token, tokenID: name}
}

// Basic authenticates with HTTP basic authentication against users (name
// to password); the audit log records the user name. Serve the console
// over TLS when it leaves the host.
func Basic(realm string, users map[string]string) Auth {
	if realm == "" {
		realm = "idemq console"
	}
	return Auth{kind: "basic", users: users, realm: realm}
}

// Unauthenticated lets every request in and records identity as the
// operator. It is for a console bound to the loopback interface only, as
// `idemq console` does without --token or --basic-user.
func Unauthenticated(identity string) Auth {
	if identity == "" {
		identity = "unknown"
	}
	return Auth{kind: "none", identity: func(*http.Request) string { return identity }}
}

// Kind names the choice: "middleware", "token", "basic", "none", or "" for
// the zero Auth.
func (a Auth) Kind() string { return a.kind }

func (a Auth) validate() error {
	switch a.kind {
	case "":
		return errors.New("console: Config.Auth is required: choose Middleware, Token, Basic or Unauthenticated")
	case "middleware":
		if a.mw == nil || a.identity == nil {
			return errors.New("console: Middleware auth needs both a middleware and an identity function")
		}
	case "token":
		if len(a.token) < 16 {
			return errors.New("console: a Token must be at least 16 characters")
		}
	case "basic":
		if len(a.users) == 0 {
			return errors.New("console: Basic auth needs at least one user")
		}
		for u, p := range a.users {
			if u == "" || p == "" {
				return errors.New("console: Basic auth users need a name and a password")
			}
		}
	}
	return nil
}

const sessionCookie = "idemq_console_session"

type identityKey struct{}

// sessionValue is what the token cookie holds: a MAC of the token, so the
// cookie never carries the token itself.
func (h *Handler) sessionValue() string {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte("session\x00" + h.cfg.Auth.token))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// authenticate returns the operator of r, or "" when r is not signed in.
func (h *Handler) authenticate(r *http.Request) string {
	a := h.cfg.Auth
	switch a.kind {
	case "token":
		if v := r.Header.Get("Authorization"); len(v) > 7 && v[:7] == "Bearer " && equal(v[7:], a.token) {
			return a.tokenID
		}
		if c, err := r.Cookie(sessionCookie); err == nil && equal(c.Value, h.sessionValue()) {
			return a.tokenID
		}
	case "basic":
		u, p, ok := r.BasicAuth()
		if !ok {
			return ""
		}
		want, known := a.users[u]
		// Compare even for an unknown user, so timing does not say which
		// names exist.
		if !known {
			want = "\x00unknown"
		}
		if equal(p, want) && known {
			return u
		}
	default:
		return a.identity(r)
	}
	return ""
}

// guard wraps next with the chosen authentication and puts the operator's
// identity in the request's context.
func (h *Handler) guard(next http.Handler) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := h.authenticate(r)
		if id == "" {
			switch h.cfg.Auth.kind {
			case "basic":
				w.Header().Set("WWW-Authenticate", `Basic realm="`+h.cfg.Auth.realm+`", charset="UTF-8"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
			case "token":
				if r.Method == http.MethodGet || r.Method == http.MethodHead {
					http.Redirect(w, r, h.path("/login"), http.StatusSeeOther)
					return
				}
				http.Error(w, "authentication required", http.StatusUnauthorized)
			default:
				http.Error(w, "no operator identity", http.StatusForbidden)
			}
			return
		}
		next.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), id)))
	})
	if h.cfg.Auth.kind == "middleware" {
		return h.cfg.Auth.mw(inner)
	}
	return inner
}
