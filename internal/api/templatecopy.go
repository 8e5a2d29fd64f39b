package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// copyTemplate streams template name from host from's export to host to's
// receive (see hostproto.TemplateExportPath), passing on the stream's
// digest trailer, and returns the template's size as to reports it. The
// stream goes through without being held: only transport buffers are in
// memory, whatever the template's size.
func (s *server) copyTemplate(ctx context.Context, from, to store.Host, name string) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src, err := s.agentCall(ctx, from, http.MethodGet, hostproto.TemplateExportPath(name), hostproto.TemplateExportProcedure(name), nil)
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer func() { _ = src.Body.Close() }()
	if src.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("export: %w", agentAnswerError(src))
	}
	relay := &trailerRelay{from: src, into: http.Header{hostproto.TemplateDigestTrailer: nil}}
	dst, err := s.agentCall(ctx, to, http.MethodPost, hostproto.TemplateReceivePath(name), hostproto.TemplateReceiveProcedure(name), relay)
	if err != nil {
		return 0, fmt.Errorf("receive: %w", err)
	}
	defer func() { _ = dst.Body.Close() }()
	if dst.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("receive: %w", agentAnswerError(dst))
	}
	var got hostproto.ReceivedTemplate
	if err := json.NewDecoder(io.LimitReader(dst.Body, 64<<10)).Decode(&got); err != nil {
		return 0, fmt.Errorf("receive: reading the answer: %w", err)
	}
	return got.SizeBytes, nil
}

// agentCall sends method path to host h with a token for procedure bound
// to the request line, over h's pinned TLS link; a trailerRelay body is
// sent chunked, with its trailer. The token is set here, not by
// hostauth's signing transport, which clones the request and with it the
// trailer map that the relay fills in as the body ends.
func (s *server) agentCall(ctx context.Context, h store.Host, method, path, procedure string, body *trailerRelay) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = body
	}
	req, err := http.NewRequestWithContext(ctx, method, agentURL(h)+path, rd)
	if err != nil {
		return nil, err
	}
	tok, err := s.signer.BoundToken(h.ID, procedure, hostauth.RequestDigest(method, req.URL.RequestURI()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-tar")
		req.ContentLength = -1
		req.Trailer = body.into
	}
	c := s.agents.client(h)
	return (&http.Client{Transport: c.Transport, CheckRedirect: noRedirects}).Do(req)
}

// agentAnswerError describes an agent's error answer (its status and the
// start of its body).
func agentAnswerError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Errorf("agent answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
}

// trailerRelay is the body of a request that passes on another answer's
// body and, as that body ends, its trailers (which net/http reads only
// then): into is the request's Trailer map.
type trailerRelay struct {
	from *http.Response
	into http.Header
}

func (t *trailerRelay) Read(p []byte) (int, error) {
	n, err := t.from.Body.Read(p)
	if err == io.EOF {
		for k := range t.into {
			t.into[k] = t.from.Trailer.Values(k)
		}
	}
	return n, err
}
