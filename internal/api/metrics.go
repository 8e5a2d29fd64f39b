package api

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// metrics are the API's Prometheus metrics. Route labels are patterns, not
// paths, so that ids do not explode the series count; methods and status
// codes come from closed sets (methodLabel, statusLabel).
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// Lifecycle operations, by outcome (ok or error), timed from the
	// claim to the agent's answer.
	pause    *prometheus.HistogramVec
	resume   *prometheus.HistogramVec
	snapshot *prometheus.HistogramVec
}

// lifecycleBuckets spread from a fast resume (tens of ms) to a pause of a
// large capsule (a minute).
var lifecycleBuckets = []float64{0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

func lifecycleHistogram(name, help string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: lifecycleBuckets},
		[]string{"outcome"})
}

func newMetrics(reg *prometheus.Registry, st *store.Store, log *slog.Logger) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wrenn_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wrenn_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by method and route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route"}),
		pause:    lifecycleHistogram("wrenn_capsule_pause_seconds", "Time to pause a capsule, by outcome (ok, error)."),
		resume:   lifecycleHistogram("wrenn_capsule_resume_seconds", "Time to resume a capsule, by outcome (ok, error)."),
		snapshot: lifecycleHistogram("wrenn_snapshot_create_seconds", "Time to snapshot a capsule into a template, by outcome (ok, error)."),
	}
	for _, h := range []*prometheus.HistogramVec{m.pause, m.resume, m.snapshot} {
		// Both series exist from the start, so that a rate of errors is
		// 0 rather than absent.
		h.WithLabelValues("ok")
		h.WithLabelValues("error")
	}
	reg.MustRegister(m.requests, m.duration, m.pause, m.resume, m.snapshot, &hostCollector{store: st, log: log},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(method, route string, status int, elapsed time.Duration) {
	method = methodLabel(method)
	m.requests.WithLabelValues(method, route, statusLabel(status)).Inc()
	m.duration.WithLabelValues(method, route).Observe(elapsed.Seconds())
}

// Every label value comes from a closed set, whatever the request says:
// the method and route of an unauthenticated request are the client's
// choice, and each new value would be a series kept for ever. Routes are
// already patterns (or "dashboard", "unmatched"); methods and status codes
// are mapped here.

// knownMethods are the methods labelled as themselves.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
	http.MethodConnect: true, http.MethodTrace: true,
}

// methodLabel is method if it is a standard one, else "other".
func methodLabel(method string) string {
	if knownMethods[method] {
		return method
	}
	return "other"
}

// statusLabel is the status code if net/http knows it, else "other" (a
// download passes on envd's 2xx status).
func statusLabel(status int) string {
	if http.StatusText(status) == "" {
		return "other"
	}
	return strconv.Itoa(status)
}

// hostCollector reports hosts by status, read from the database at scrape
// time so that every replica reports the same truth.
type hostCollector struct {
	store *store.Store
	log   *slog.Logger
}

var hostsDesc = prometheus.NewDesc("wrenn_hosts", "Hosts by status.", []string{"status"}, nil)

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) { ch <- hostsDesc }

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.store.HostCounts(ctx)
	if err != nil {
		c.log.Warn("metrics: counting hosts", "err", err)
		ch <- prometheus.NewInvalidMetric(hostsDesc, err)
		return
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(hostsDesc, prometheus.GaugeValue, float64(n), status)
	}
}

func (s *server) handleMetrics() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)})
}
