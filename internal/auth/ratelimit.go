package auth

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimiter allows each key (a client IP) perMinute events a minute, with a
// burst of the same size. It is safe for concurrent use.
type RateLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex // guards clients and swept
	clients map[string]*client
	swept   time.Time
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewRateLimiter returns a limiter allowing perMinute events per key.
func NewRateLimiter(perMinute int) *RateLimiter {
	return &RateLimiter{
		limit:   rate.Limit(float64(perMinute) / 60),
		burst:   perMinute,
		now:     time.Now,
		clients: make(map[string]*client),
	}
}

// Allow reports whether key may act now; when not, it also returns how long
// to wait.
func (l *RateLimiter) Allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	c, ok := l.clients[key]
	if !ok {
		c = &client{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[key] = c
	}
	c.seen = now
	r := c.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets clients idle long enough for their bucket to be full again,
// so that the map does not grow with every IP ever seen.
func (l *RateLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, c := range l.clients {
		if now.Sub(c.seen) > 2*time.Minute {
			delete(l.clients, k)
		}
	}
}
