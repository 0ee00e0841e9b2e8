// Package topics creates RocketMQ topics the way `mqadmin updateTopic`
// does, for programs and tests that must not depend on a broker creating
// topics by itself.
//
// A real name server answers TOPIC_NOT_EXIST for a topic nobody created,
// and a broker creates topics on its own only with autoCreateTopicEnable
// (commonly off in production): a push consumer's Start then fails with
// "route info not found". Create does what an operator does: it asks the
// name server for the cluster's master brokers (GET_BROKER_CLUSTER_INFO),
// sends each one UPDATE_AND_CREATE_TOPIC, checks every reply (the
// client library's admin.CreateTopic ignores the reply's code, so a
// refused create looks like a success), and then waits until the name
// server routes the topic to every broker it was created on.
//
// Creating a topic that exists updates it (its queue counts and
// permission), as updateTopic does; it is safe to call at every start.
package topics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/idemq/idemq/internal/nameserver"
	"github.com/idemq/idemq/internal/remoting"
)

// DefaultQueues is the queue count of a new topic, as mqadmin's default.
const DefaultQueues = 8

// Permissions of a topic (RocketMQ's PermName).
const (
	PermRead      = 4
	PermWrite     = 2
	PermReadWrite = PermRead | PermWrite
)

// ErrNotCreated wraps a broker's refusal to create a topic, and a route
// that never showed the topic.
var ErrNotCreated = errors.New("topics: topic not created")

var topicRE = regexp.MustCompile(`^[%|a-zA-Z0-9_-]{1,127}$`)

// Config adjusts Create. The zero value creates DefaultQueues read-write
// queues on every master broker the name servers know.
type Config struct {
	// Queues is the number of read and write queues. Defaults to
	// DefaultQueues.
	Queues int
	// Perm is the topic's permission. Defaults to PermReadWrite.
	Perm int
	// Order marks the topic as ordered (updateTopic -o).
	Order bool
	// Cluster, if set, creates the topic only on the brokers of that
	// cluster (updateTopic -c).
	Cluster string
	// Brokers, if set, are the broker addresses (host:port) to create the
	// topic on, instead of asking the name servers (updateTopic -b).
	Brokers []string
}

// Create creates (or updates) topic on the brokers and waits until every
// name server in nameServers routes it. ctx bounds the whole operation;
// without a deadline it is given 30 seconds.
func Create(ctx context.Context, nameServers []string, topic string, opts Config) error {
	if !topicRE.MatchString(topic) {
		return fmt.Errorf("topics: invalid topic %q (want 1 to 127 of [a-zA-Z0-9_%%|-])", topic)
	}
	if opts.Queues == 0 {
		opts.Queues = DefaultQueues
	}
	if opts.Perm == 0 {
		opts.Perm = PermReadWrite
	}
	if opts.Queues < 1 || opts.Queues > 1024 {
		return fmt.Errorf("topics: %d queues not in [1, 1024]", opts.Queues)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	ns, err := nameserver.Resolve(ctx, nameServers)
	if err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	if len(ns) == 0 {
		return errors.New("topics: no name servers")
	}
	brokers := opts.Brokers
	var names []string
	if len(brokers) == 0 {
		masters, err := clusterMasters(ctx, ns, opts.Cluster)
		if err != nil {
			return err
		}
		for _, name := range slices.Sorted(maps.Keys(masters)) {
			names = append(names, name)
			brokers = append(brokers, masters[name])
		}
	}
	q := strconv.Itoa(opts.Queues)
	ext := map[string]string{
		"topic": topic, "defaultTopic": "TBW102", "readQueueNums": q, "writeQueueNums": q,
		"perm": strconv.Itoa(opts.Perm), "topicFilterType": "SINGLE_TAG", "topicSysFlag": "0",
		"order": strconv.FormatBool(opts.Order),
	}
	for _, addr := range brokers {
		r, err := remoting.Call(ctx, addr, remoting.CodeUpdateAndCreateTopic, ext, nil)
		if err != nil {
			return fmt.Errorf("topics: create %s on broker %s: %w", topic, addr, err)
		}
		if r.Code != remoting.ResponseSuccess {
			return fmt.Errorf("%w: broker %s refused %s: code %d: %s", ErrNotCreated, addr, topic, r.Code, r.Remark)
		}
	}
	for _, addr := range ns {
		if err := waitForRoute(ctx, addr, topic, names); err != nil {
			return err
		}
	}
	return nil
}

// unquotedKey matches a JSON object key written without quotes, as the
// Java name server writes the integer keys of brokerAddrs ({0:"a:1"}).
var unquotedKey = regexp.MustCompile(`([{,])\s*(-?\d+)\s*:`)

// clusterMasters asks the name servers (the first that answers) for the
// master address of every broker, by broker name.
func clusterMasters(ctx context.Context, ns []string, cluster string) (map[string]string, error) {
	var errs []error
	for _, addr := range ns {
		r, err := remoting.Call(ctx, addr, remoting.CodeGetBrokerClusterInfo, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("name server %s: %w", addr, err))
			continue
		}
		if r.Code != remoting.ResponseSuccess {
			errs = append(errs, fmt.Errorf("name server %s: cluster info: code %d: %s", addr, r.Code, r.Remark))
			continue
		}
		var info struct {
			BrokerAddrTable map[string]struct {
				Cluster     string            `json:"cluster"`
				BrokerName  string            `json:"brokerName"`
				BrokerAddrs map[string]string `json:"brokerAddrs"`
			} `json:"brokerAddrTable"`
		}
		body := unquotedKey.ReplaceAll(r.Body, []byte(`$1"$2":`))
		if err := json.Unmarshal(body, &info); err != nil {
			errs = append(errs, fmt.Errorf("name server %s: cluster info: %w", addr, err))
			continue
		}
		masters := map[string]string{}
		for name, bd := range info.BrokerAddrTable {
			if cluster != "" && bd.Cluster != cluster {
				continue
			}
			if a := bd.BrokerAddrs["0"]; a != "" {
				masters[name] = a
			}
		}
		if len(masters) == 0 {
			if cluster != "" {
				return nil, fmt.Errorf("topics: name server %s knows no master broker in cluster %q", addr, cluster)
			}
			return nil, fmt.Errorf("topics: name server %s knows no master broker", addr)
		}
		return masters, nil
	}
	return nil, fmt.Errorf("topics: no name server answered: %w", errors.Join(errs...))
}

// waitForRoute polls a name server until it routes topic to every broker
// in names (or, with no names, to any broker).
func waitForRoute(ctx context.Context, addr, topic string, names []string) error {
	last := "no reply yet"
	for {
		r, err := remoting.Call(ctx, addr, remoting.CodeGetRouteInfoByTopic, map[string]string{"topic": topic}, nil)
		switch {
		case err != nil:
			last = err.Error()
		case r.Code != remoting.ResponseSuccess:
			last = fmt.Sprintf("code %d: %s", r.Code, r.Remark)
		default:
			var route struct {
				QueueDatas []struct {
					BrokerName string `json:"brokerName"`
				} `json:"queueDatas"`
			}
			if err := json.Unmarshal(r.Body, &route); err != nil {
				last = err.Error()
				break
			}
			have := make([]string, 0, len(route.QueueDatas))
			for _, q := range route.QueueDatas {
				have = append(have, q.BrokerName)
			}
			sort.Strings(have)
			missing := 0
			for _, n := range names {
				if !slices.Contains(have, n) {
					missing++
				}
			}
			if len(have) > 0 && missing == 0 {
				return nil
			}
			last = fmt.Sprintf("routed to %v, want %v", have, names)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: name server %s does not route %s (%s): %w", ErrNotCreated, addr, topic, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
