package service

import (
	"errors"
	"fmt"
)

// Kind classifies a Service error so that a caller (a Step Functions state
// machine branching on a Lambda errorType, a script reading an exit code)
// can tell what went wrong without parsing messages. Kinds are stable.
type Kind string

// The kinds of Service errors.
const (
	// KindInvalidRequest: the request itself is wrong (references,
	// annotations, platforms, flags); retrying will not help.
	KindInvalidRequest Kind = "InvalidRequest"
	// KindSourceNotFound: the source repository, tag or digest does not exist.
	KindSourceNotFound Kind = "SourceNotFound"
	// KindUnauthorized: a registry refused our credentials or has none.
	KindUnauthorized Kind = "Unauthorized"
	// KindSourceFailed: the source could not be read (unreachable, broken
	// manifests, bytes not matching their digest).
	KindSourceFailed Kind = "SourceFailed"
	// KindCopyFailed: writing to the destination failed; the destination tag
	// was left as it was.
	KindCopyFailed Kind = "CopyFailed"
	// KindSigningFailed: signing failed; when it follows a copy, the copy
	// succeeded.
	KindSigningFailed Kind = "SigningFailed"
	// KindReferrersFailed: copying an image's referrers or cosign tags
	// failed; the copy (and signing, when asked) succeeded.
	KindReferrersFailed Kind = "ReferrersFailed"
	// KindVerificationFailed: an image has no valid signature.
	KindVerificationFailed Kind = "VerificationFailed"
	// KindPolicyRefused: the source policy refused the source (no
	// signature by its keys or identity, a tampered signature, a missing
	// annotation); nothing was written. Retrying will not help until the
	// upstream signs, or the policy changes.
	KindPolicyRefused Kind = "PolicyRefused"
	// KindTagImmutable: -immutable refused to move the destination tag;
	// nothing was written.
	KindTagImmutable Kind = "TagImmutable"
	// KindTimeout: the work was cancelled before its deadline (the Lambda
	// function's timeout); the destination tag was left as it was.
	KindTimeout Kind = "Timeout"
	// KindInternal: anything else; a bug if it ever shows.
	KindInternal Kind = "InternalError"
)

// Error is a Service error with its Kind.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind k with a formatted message.
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the Kind of err, or "" when err carries none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}
