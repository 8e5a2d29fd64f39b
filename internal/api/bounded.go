package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// Answers built from what a capsule says (process output, directory
// listings, process lists) are bounded by their size as JSON, which is
// what the control plane holds and sends: escaping makes a control byte
// six bytes ("\u0001"), so a bound on the raw bytes would let a capsule
// make the answer six times larger.

// maxListingBytes bounds a directory listing or process list as JSON.
const maxListingBytes = 16 << 20

// jsonByteLen is the length encoding/json gives each byte below 0x80
// inside a string: short escapes for quote, backslash and \b \f \n \r \t,
// \u00XX for other control bytes and for < > & (HTML-safe escaping).
var jsonByteLen = func() (t [utf8.RuneSelf]uint8) {
	for b := range t {
		switch {
		case b == '"' || b == '\\' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
			t[b] = 2
		case b < 0x20 || b == '<' || b == '>' || b == '&':
			t[b] = 6
		default:
			t[b] = 1
		}
	}
	return t
}()

// jsonPrefix returns the length n of the longest prefix of b, cut between
// characters, whose JSON string encoding (without the quotes) takes at most
// room bytes, and that encoding's length. Bytes that are not UTF-8 count
// as "\ufffd", which is what encoding/json writes for them; a character
// cut at the end of b counts as such bytes, so lengths summed over pieces
// of a text are never less than the text's own.
func jsonPrefix(b []byte, room int) (n, size int) {
	for n < len(b) {
		var w, cost int
		if c := b[n]; c < utf8.RuneSelf {
			w, cost = 1, int(jsonByteLen[c])
		} else {
			r, rw := utf8.DecodeRune(b[n:])
			switch {
			case r == utf8.RuneError && rw == 1:
				w, cost = 1, 6
			case r == '\u2028' || r == '\u2029':
				w, cost = rw, 6
			default:
				w, cost = rw, rw
			}
		}
		if size+cost > room {
			break
		}
		n, size = n+w, size+cost
	}
	return n, size
}

// jsonList builds a JSON array item by item, refusing to grow beyond its
// limit, so that neither the answer nor its building holds more than that.
type jsonList struct {
	buf   bytes.Buffer
	limit int
}

// add appends v; it reports false, adding nothing, when v would take the
// array past its limit.
func (l *jsonList) add(v any) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	// One byte for the comma or the opening bracket, one for the closing.
	if l.buf.Len()+len(b)+2 > l.limit {
		return false, nil
	}
	if l.buf.Len() == 0 {
		l.buf.WriteByte('[')
	} else {
		l.buf.WriteByte(',')
	}
	l.buf.Write(b)
	return true, nil
}

// bytes returns the array.
func (l *jsonList) bytes() []byte {
	if l.buf.Len() == 0 {
		return []byte("[]")
	}
	return append(l.buf.Bytes(), ']')
}

// answerJSON writes body, already JSON, with status.
func answerJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
