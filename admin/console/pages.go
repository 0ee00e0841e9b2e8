package console

import (
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/idemq/idemq/admin"
)

// fastPath is the Redis fast path's counters from the service's registry.
type fastPath struct {
	Hits, Misses, Fallbacks float64
}

type overviewData struct {
	*admin.Overview
	// Metrics is set when Config.Gatherer is: what the service's own
	// metrics say beyond the tables.
	Metrics *liveMetrics
}

// liveMetrics is read from the service's registry: per consumer group,
// duplicates skipped and handlers in flight; the Redis fast path.
type liveMetrics struct {
	Duplicates map[string]float64
	InFlight   map[string]float64
	FastPath   *fastPath
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	ov, err := h.cfg.Admin.Overview(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := overviewData{Overview: ov}
	if h.cfg.Gatherer != nil {
		mfs, err := h.cfg.Gatherer.Gather()
		if err != nil {
			h.cfg.Logger.Warn("console: gather metrics", "err", err)
		}
		d.Metrics = metricsOf(mfs)
	}
	h.render(w, r, http.StatusOK, "overview", h.newView(r, "overview", "Overview", d))
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// metricsOf reads the consumer's and the Redis fast path's metrics by the
// suffixes of their names, whatever namespace the service chose.
func metricsOf(mfs []*dto.MetricFamily) *liveMetrics {
	lm := &liveMetrics{Duplicates: map[string]float64{}, InFlight: map[string]float64{}}
	var fp fastPath
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			switch {
			case strings.HasSuffix(name, "_consumer_duplicates_total"):
				lm.Duplicates[label(m, "group")] += m.GetCounter().GetValue()
			case strings.HasSuffix(name, "_consumer_in_flight"):
				lm.InFlight[label(m, "group")] += m.GetGauge().GetValue()
			case strings.HasSuffix(name, "redis_fastpath_hits_total"):
				fp.Hits += m.GetCounter().GetValue()
				lm.FastPath = &fp
			case strings.HasSuffix(name, "redis_fastpath_misses_total"):
				fp.Misses += m.GetCounter().GetValue()
				lm.FastPath = &fp
			case strings.HasSuffix(name, "redis_fastpath_fallbacks_total"):
				fp.Fallbacks += m.GetCounter().GetValue()
				lm.FastPath = &fp
			}
		}
	}
	return lm
}

// deadFilter reads a dead-letter filter from a query or form.
func (h *Handler) deadFilter(r *http.Request, v url.Values) (admin.DeadFilter, error) {
	f := admin.DeadFilter{
		Group: v.Get("group"), Topic: v.Get("topic"), MessageID: v.Get("message_id"), Key: v.Get("key"),
		Error: v.Get("error"), Signature: v.Get("signature"),
	}
	loc := h.location(r)
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if s := v.Get(p.name); s != "" {
			t, err := time.ParseInLocation("2006-01-02T15:04", s, loc)
			if err != nil {
				return f, bad("%s: want a date and time such as 2026-01-31T14:00", p.name)
			}
			*p.dst = t
		}
	}
	switch v.Get("state") {
	case "", "waiting":
	case "redriven":
		f.State = admin.DeadRedriven
	case "any":
		f.State = admin.DeadAny
	default:
		return f, bad("state: want waiting, redriven or any")
	}
	for _, s := range v["id"] {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return f, bad("id: want dead-letter IDs")
		}
		f.IDs = append(f.IDs, id)
	}
	f.All = v.Get("all") == "1"
	return f, nil
}

// filterQuery encodes f as a query, the inverse of deadFilter.
func (h *Handler) filterQuery(r *http.Request, f admin.DeadFilter) url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("group", f.Group)
	set("topic", f.Topic)
	set("message_id", f.MessageID)
	set("key", f.Key)
	set("error", f.Error)
	set("signature", f.Signature)
	loc := h.location(r)
	if !f.Since.IsZero() {
		q.Set("since", f.Since.In(loc).Format("2006-01-02T15:04"))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.In(loc).Format("2006-01-02T15:04"))
	}
	switch f.State {
	case admin.DeadRedriven:
		q.Set("state", "redriven")
	case admin.DeadAny:
		q.Set("state", "any")
	}
	for _, id := range f.IDs {
		q.Add("id", strconv.FormatInt(id, 10))
	}
	if f.All {
		q.Set("all", "1")
	}
	return q
}

type deadListData struct {
	Filter   admin.DeadFilter
	State    string
	Items    []admin.DeadLetter
	Count    int64
	Query    template.URL
	Next     string
	First    string
	Filtered bool
}

func stateName(s admin.DeadState) string {
	switch s {
	case admin.DeadRedriven:
		return "redriven"
	case admin.DeadAny:
		return "any"
	}
	return "waiting"
}

func (h *Handler) deadList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := h.deadFilter(r, q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	f.IDs, f.All = nil, false
	items, next, err := h.cfg.Admin.ListDead(r.Context(), f, admin.Page{Cursor: formInt(q.Get("cursor")), Limit: h.cfg.PageSize, Newest: true})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	n, err := h.cfg.Admin.CountDead(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	fq := h.filterQuery(r, f)
	d := deadListData{Filter: f, State: stateName(f.State), Items: items, Count: n, Query: template.URL(fq.Encode()),
		Filtered: len(fq) > 0 && !(len(fq) == 1 && fq.Has("state"))}
	if next != 0 {
		nq := h.filterQuery(r, f)
		nq.Set("cursor", strconv.FormatInt(next, 10))
		d.Next = "dead?" + nq.Encode()
	}
	if q.Get("cursor") != "" {
		d.First = "dead?" + fq.Encode()
	}
	h.render(w, r, http.StatusOK, "dead", h.newView(r, "dead", "Dead letters", d))
}

type deadGroupsData struct {
	Groups []admin.ErrorGroup
	Links  map[string]template.URL
	Total  int64
}

func (h *Handler) deadGroups(w http.ResponseWriter, r *http.Request) {
	f, err := h.deadFilter(r, r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	f.IDs, f.All, f.Signature = nil, false, ""
	gs, err := h.cfg.Admin.DeadGroups(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := deadGroupsData{Groups: gs, Links: map[string]template.URL{}}
	for _, g := range gs {
		gf := f
		gf.Signature = g.Signature
		// An encoded query: safe in the query part of a link.
		d.Links[g.Signature] = template.URL(h.filterQuery(r, gf).Encode())
		d.Total += g.Count
	}
	h.render(w, r, http.StatusOK, "groups", h.newView(r, "groups", "Dead letters by error", d))
}

type deadShowData struct {
	D     *admin.DeadLetter
	Body  body
	Props []kv
}

type kv struct{ K, V string }

func sortedProps(m map[string]string) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].K < out[j].K })
	return out
}

func (h *Handler) deadShow(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		h.fail(w, r, admin.ErrNotFound)
		return
	}
	d, err := h.cfg.Admin.DeadLetter(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	data := deadShowData{D: d, Props: sortedProps(d.Properties),
		Body: newBody(d.Body, r.URL.Query().Get("view"), h.path("/dead/"+strconv.FormatInt(id, 10))+"?",
			h.path("/dead/"+strconv.FormatInt(id, 10)+"/body"))}
	h.render(w, r, http.StatusOK, "deadshow", h.newView(r, "dead", "Dead letter "+strconv.FormatInt(id, 10), data))
}

// deadBody serves a body as a download: never rendered by the browser.
func (h *Handler) deadBody(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	d, err := h.cfg.Admin.DeadLetter(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="dead-letter-`+strconv.FormatInt(id, 10)+`.bin"`)
	_, _ = w.Write(d.Body)
}

type confirmData struct {
	Action  string
	What    string
	Count   int64
	Sample  []admin.DeadLetter
	Fields  []kv
	Back    string
	Changed string
	Result  *admin.ActionResult
	Done    string
}

func (h *Handler) deadConfirm(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	action := q.Get("action")
	if action != "redrive" && action != "discard" {
		h.fail(w, r, bad("action: want redrive or discard"))
		return
	}
	f, err := h.deadFilter(r, q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.renderDeadConfirm(w, r, http.StatusOK, action, f, "")
}

func (h *Handler) renderDeadConfirm(w http.ResponseWriter, r *http.Request, status int, action string, f admin.DeadFilter, changed string) {
	if action == "redrive" {
		f.State = admin.DeadWaiting
	}
	// The same selection the action uses: a dry run.
	var res admin.ActionResult
	var err error
	if action == "redrive" {
		res, err = h.cfg.Admin.RedriveDead(r.Context(), f, admin.ActionConfig{DryRun: true})
	} else {
		res, err = h.cfg.Admin.DiscardDead(r.Context(), f, admin.ActionConfig{DryRun: true})
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	sample, _, err := h.cfg.Admin.ListDead(r.Context(), f, admin.Page{Limit: 20, Newest: true})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := confirmData{Action: action, What: f.String(), Count: res.Matched, Sample: sample, Changed: changed,
		Back: "dead?" + h.filterQuery(r, admin.DeadFilter{Group: f.Group, Topic: f.Topic, MessageID: f.MessageID,
			Key: f.Key, Error: f.Error, Signature: f.Signature, Since: f.Since, Until: f.Until, State: f.State}).Encode()}
	for k, vs := range h.filterQuery(r, f) {
		for _, v := range vs {
			d.Fields = append(d.Fields, kv{k, v})
		}
	}
	sort.Slice(d.Fields, func(i, j int) bool { return d.Fields[i].K < d.Fields[j].K })
	h.render(w, r, status, "confirm", h.newView(r, "dead", "Confirm "+action, d))
}

// deadAct runs a confirmed redrive or discard, refusing it when the
// selection no longer matches the count the operator confirmed.
func (h *Handler) deadAct(w http.ResponseWriter, r *http.Request) {
	action := r.PostFormValue("action")
	if action != "redrive" && action != "discard" {
		h.fail(w, r, bad("action: want redrive or discard"))
		return
	}
	f, err := h.deadFilter(r, r.PostForm)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if action == "redrive" {
		f.State = admin.DeadWaiting
	}
	expect, err := strconv.ParseInt(r.PostFormValue("expect"), 10, 64)
	if err != nil {
		h.fail(w, r, bad("expect: the confirmed count is missing"))
		return
	}
	n, err := h.cfg.Admin.CountDead(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if n != expect {
		h.renderDeadConfirm(w, r, http.StatusConflict, action, f,
			"The selection changed since you confirmed it: it matched "+strconv.FormatInt(expect, 10)+
				", it now matches "+strconv.FormatInt(n, 10)+". Nothing was done; review it and confirm again.")
		return
	}
	var res admin.ActionResult
	if action == "redrive" {
		res, err = h.cfg.Admin.RedriveDead(r.Context(), f, admin.ActionConfig{})
	} else {
		res, err = h.cfg.Admin.DiscardDead(r.Context(), f, admin.ActionConfig{})
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "result", h.newView(r, "dead", "Done", confirmData{Action: action, What: f.String(),
		Count: res.Matched, Result: &res, Back: "dead"}))
}

type outboxData struct {
	Status string
	Topic  string
	Stats  admin.OutboxStats
	Items  []admin.OutboxEntry
	Next   string
	First  string
}

func outboxStatuses(s string) ([]string, error) {
	switch s {
	case "", "pending":
		return []string{"pending"}, nil
	case "failed", "sent":
		return []string{s}, nil
	case "all":
		return nil, nil
	}
	return nil, bad("status: want pending, failed, sent or all")
}

func (h *Handler) outboxList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := q.Get("status")
	if status == "" {
		status = "pending"
	}
	sts, err := outboxStatuses(status)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	st, err := h.cfg.Admin.OutboxStats(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	topic := q.Get("topic")
	items, next, err := h.cfg.Admin.ListOutbox(r.Context(), admin.OutboxFilter{Statuses: sts, Topic: topic},
		admin.Page{Cursor: formInt(q.Get("cursor")), Limit: h.cfg.PageSize})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := outboxData{Status: status, Topic: topic, Stats: st, Items: items}
	base := url.Values{"status": {status}}
	if topic != "" {
		base.Set("topic", topic)
	}
	if next != 0 {
		nq := url.Values{"status": {status}, "cursor": {strconv.FormatInt(next, 10)}}
		if topic != "" {
			nq.Set("topic", topic)
		}
		d.Next = "outbox?" + nq.Encode()
	}
	if q.Get("cursor") != "" {
		d.First = "outbox?" + base.Encode()
	}
	h.render(w, r, http.StatusOK, "outbox", h.newView(r, "outbox", "Outbox", d))
}

type outboxShowData struct {
	E     *admin.OutboxEntry
	Body  body
	Props []kv
}

func (h *Handler) outboxShow(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	e, err := h.cfg.Admin.OutboxEntry(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := outboxShowData{E: e, Props: sortedProps(e.Properties), Body: newBody(e.Body, r.URL.Query().Get("view"), h.path("/outbox/show")+"?"+url.Values{"id": {id}}.Encode()+"&", "")}
	h.render(w, r, http.StatusOK, "outboxshow", h.newView(r, "outbox", "Outbox message", d))
}

func outboxSelector(v url.Values) admin.OutboxSelector {
	return admin.OutboxSelector{MessageIDs: v["id"], Topic: v.Get("topic"), All: v.Get("all") == "1"}
}

func (h *Handler) outboxConfirm(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	h.renderOutboxConfirm(w, r, http.StatusOK, q.Get("action"), outboxSelector(q), "")
}

func (h *Handler) renderOutboxConfirm(w http.ResponseWriter, r *http.Request, status int, action string, s admin.OutboxSelector, changed string) {
	if action != "redrive" && action != "discard" {
		h.fail(w, r, bad("action: want redrive or discard"))
		return
	}
	n, err := h.cfg.Admin.CountOutbox(r.Context(), s)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := confirmData{Action: action, What: "failed outbox rows: " + s.String(), Count: n, Changed: changed, Back: "outbox?status=failed"}
	for _, id := range s.MessageIDs {
		d.Fields = append(d.Fields, kv{"id", id})
	}
	if s.Topic != "" {
		d.Fields = append(d.Fields, kv{"topic", s.Topic})
	}
	if s.All {
		d.Fields = append(d.Fields, kv{"all", "1"})
	}
	h.render(w, r, status, "confirm", h.newView(r, "outbox", "Confirm outbox "+action, d))
}

func (h *Handler) outboxAct(w http.ResponseWriter, r *http.Request) {
	action := r.PostFormValue("action")
	s := outboxSelector(r.PostForm)
	if action != "redrive" && action != "discard" {
		h.fail(w, r, bad("action: want redrive or discard"))
		return
	}
	expect, err := strconv.ParseInt(r.PostFormValue("expect"), 10, 64)
	if err != nil {
		h.fail(w, r, bad("expect: the confirmed count is missing"))
		return
	}
	n, err := h.cfg.Admin.CountOutbox(r.Context(), s)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if n != expect {
		h.renderOutboxConfirm(w, r, http.StatusConflict, action, s,
			"The selection changed since you confirmed it: it matched "+strconv.FormatInt(expect, 10)+
				", it now matches "+strconv.FormatInt(n, 10)+". Nothing was done; review it and confirm again.")
		return
	}
	var res admin.ActionResult
	if action == "redrive" {
		res, err = h.cfg.Admin.RedriveOutbox(r.Context(), s, admin.ActionConfig{})
	} else {
		res, err = h.cfg.Admin.DiscardOutbox(r.Context(), s, admin.ActionConfig{})
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "result", h.newView(r, "outbox", "Done", confirmData{Action: action,
		What: "failed outbox rows: " + s.String(), Count: res.Matched, Result: &res, Back: "outbox?status=failed"}))
}

type attemptsData struct {
	Group string
	Stale bool
	Items []admin.Attempt
	Next  string
	Prev  string
	After time.Duration
}

func (h *Handler) attempts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := attemptsData{Group: q.Get("group"), Stale: q.Get("stale") != "0"}
	offset := int(formInt(q.Get("offset")))
	if offset < 0 {
		offset = 0
	}
	items, err := h.cfg.Admin.Attempts(r.Context(), admin.AttemptFilter{Group: d.Group, StaleOnly: d.Stale,
		Offset: offset, Limit: h.cfg.PageSize + 1})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	link := func(off int) string {
		v := url.Values{"offset": {strconv.Itoa(off)}}
		if d.Group != "" {
			v.Set("group", d.Group)
		}
		if !d.Stale {
			v.Set("stale", "0")
		}
		return "attempts?" + v.Encode()
	}
	if len(items) > h.cfg.PageSize {
		items = items[:h.cfg.PageSize]
		d.Next = link(offset + h.cfg.PageSize)
	}
	if offset > 0 {
		d.Prev = link(max(0, offset-h.cfg.PageSize))
	}
	d.Items = items
	h.render(w, r, http.StatusOK, "attempts", h.newView(r, "attempts", "Attempts", d))
}

type keysData struct {
	Group, Key string
	State      *admin.KeyState
}

func (h *Handler) keys(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := keysData{Group: q.Get("group"), Key: q.Get("key")}
	if d.Group != "" || d.Key != "" {
		st, err := h.cfg.Admin.Key(r.Context(), d.Group, d.Key)
		if err != nil {
			h.fail(w, r, bad("%s", err.Error()))
			return
		}
		d.State = st
	}
	h.render(w, r, http.StatusOK, "keys", h.newView(r, "keys", "Key lookup", d))
}

type auditData struct {
	Action, Actor string
	Items         []admin.AuditRecord
	Next          string
	First         string
}

func (h *Handler) audit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := auditData{Action: q.Get("action"), Actor: q.Get("actor")}
	items, next, err := h.cfg.Admin.Audit(r.Context(), admin.AuditFilter{Action: d.Action, Actor: d.Actor},
		admin.Page{Cursor: formInt(q.Get("cursor")), Limit: h.cfg.PageSize, Newest: true})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Items = items
	base := url.Values{}
	if d.Action != "" {
		base.Set("action", d.Action)
	}
	if d.Actor != "" {
		base.Set("actor", d.Actor)
	}
	if next != 0 {
		nq := url.Values{"cursor": {strconv.FormatInt(next, 10)}}
		for k, v := range base {
			nq[k] = v
		}
		d.Next = "audit?" + nq.Encode()
	}
	if q.Get("cursor") != "" {
		d.First = "audit?" + base.Encode()
	}
	h.render(w, r, http.StatusOK, "audit", h.newView(r, "audit", "Audit log", d))
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "login", h.newView(r, "", "Sign in", nil))
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil || !equal(r.PostFormValue("token"), h.cfg.Auth.token) {
		h.render(w, r, http.StatusUnauthorized, "login", h.newView(r, "", "Sign in", "That token is not valid."))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: h.sessionValue(), Path: h.path("/"), HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, h.path("/"), http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: h.path("/"), MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, h.path("/login"), http.StatusSeeOther)
}
