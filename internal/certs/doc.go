// Package certs issues the small PKI the controller needs without
// cert-manager: a CA and serving certificates for the admission webhook and
// the audit endpoint, as PEM.
package certs
