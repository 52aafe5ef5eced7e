package registry

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ocistow/ocistow/internal/oneline"
)

// StatusCode returns the HTTP status a registry answered with, if err
// carries one, or 0.
func StatusCode(err error) int {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode
	}
	return 0
}

// Describe renders a registry error on one line: what the caller was doing
// (the context err wraps the answer in), what the registry answered and its
// error codes, without request dumps, and without the query of a
// pre-signed URL.
func Describe(err error) string {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return oneline.String(redactQuoted(err, err.Error()))
	}
	host := ""
	if terr.Request != nil {
		host = terr.Request.URL.Host
	}
	var b strings.Builder
	fmt.Fprintf(&b, "registry %s answered %d %s", host, terr.StatusCode, http.StatusText(terr.StatusCode))
	for i, d := range terr.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(string(d.Code))
		if d.Message != "" {
			b.WriteString(" " + d.Message)
		}
	}
	if terr.Request != nil {
		fmt.Fprintf(&b, " (%s %s)", terr.Request.Method, terr.Request.URL.Path)
	}
	// What the caller was doing when the registry answered (the context
	// err wraps the answer in) stays in front of it, without the query of
	// a URL the HTTP client quoted there.
	if msg := err.Error(); strings.HasSuffix(msg, terr.Error()) {
		return oneline.String(redactQuoted(err, strings.TrimSuffix(msg, terr.Error())) + b.String())
	}
	return oneline.String(b.String())
}

// redactQuoted removes from msg the query of the URL an *url.Error in err
// quotes: the HTTP client quotes whole URLs, and a pre-signed blob URL
// carries credentials in its query.
func redactQuoted(err error, msg string) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil {
			msg = strings.ReplaceAll(msg, uerr.URL, RedactURL(u))
		}
	}
	return msg
}
