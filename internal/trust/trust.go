// Package trust decides whether riposte runs an Incident's playbooks: only
// for Incidents riposte itself created (the controller's, recognised by
// their signature; an agent's, checked against the API server), or for a
// manual Incident someone allowed to approve has approved.
//
// An Incident is a command: its subject is what the playbooks isolate, kill
// or scale. Anyone who may create or patch Incidents would otherwise aim
// riposte at any pod. Labels and annotations of an Incident are chosen by
// whoever wrote it, so the decision rests on a signature only the
// controller can make, on the API server's own records (the pod's node, its
// containers, the rule's spec), and on the admission policy
// riposte-incidents (config/admission), which binds an agent's Incidents to
// the node its token was issued for and approvals to the "approve" verb.
package trust

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Signer signs the fields of an Incident that aim a response. The key lives
// in a Secret of the controller's namespace that only the controller reads.
type Signer struct{ key []byte }

// NewSigner returns a Signer with key (at least 32 bytes).
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("incident signing key: %d bytes, want at least 32", len(key))
	}
	return &Signer{key: slices.Clone(key)}, nil
}

const sigPrefix = "v1:"

// signed is what a signature covers: where the Incident is and everything
// that decides what its playbooks act on.
type signed struct {
	Namespace string                 `json:"namespace"`
	Name      string                 `json:"name"`
	Origin    string                 `json:"origin"`
	Rule      string                 `json:"rule"`
	RuleKind  string                 `json:"ruleKind"`
	Playbooks []v1alpha1.PlaybookRef `json:"playbooks"`
	Subject   v1alpha1.Subject       `json:"subject"`
}

func (s *Signer) mac(inc *v1alpha1.Incident) []byte {
	b, _ := json.Marshal(signed{
		Namespace: inc.Namespace, Name: inc.Name, Origin: inc.Labels[v1alpha1.OriginLabel],
		Rule: inc.Spec.Rule, RuleKind: inc.Spec.RuleKind, Playbooks: inc.Spec.Playbooks, Subject: inc.Spec.Subject,
	})
	m := hmac.New(sha256.New, s.key)
	m.Write(b)
	return m.Sum(nil)
}

// Sign returns the SignatureAnnotation value for inc as it stands.
func (s *Signer) Sign(inc *v1alpha1.Incident) string {
	return sigPrefix + hex.EncodeToString(s.mac(inc))
}

// Verify reports whether inc carries this Signer's signature of its current
// namespace, name, origin, rule, playbooks and subject.
func (s *Signer) Verify(inc *v1alpha1.Incident) bool {
	v, ok := strings.CutPrefix(inc.Annotations[v1alpha1.SignatureAnnotation], sigPrefix)
	if !ok {
		return false
	}
	got, err := hex.DecodeString(v)
	return err == nil && hmac.Equal(got, s.mac(inc))
}

// decided is what a decision's signature covers: which object, which spec,
// and the answer.
type decided struct {
	UID        string `json:"uid"`
	Generation int64  `json:"generation"`
	Allowed    bool   `json:"allowed"`
	Reason     string `json:"reason"`
}

func (s *Signer) decisionMAC(inc *v1alpha1.Incident, allowed bool, reason string) []byte {
	b, _ := json.Marshal(decided{UID: string(inc.UID), Generation: inc.Generation, Allowed: allowed, Reason: reason})
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("decision\x00"))
	m.Write(b)
	return m.Sum(nil)
}

// SignDecision returns the AuthorizationSignature of a decision about inc's
// current generation.
func (s *Signer) SignDecision(inc *v1alpha1.Incident, allowed bool, reason string) string {
	return sigPrefix + hex.EncodeToString(s.decisionMAC(inc, allowed, reason))
}

// VerifyDecision reports whether inc's status records a decision this
// Signer made about this very object (its uid) at its current generation.
func (s *Signer) VerifyDecision(inc *v1alpha1.Incident, allowed bool, reason string) bool {
	v, ok := strings.CutPrefix(inc.Status.AuthorizationSignature, sigPrefix)
	if !ok || inc.Status.AuthorizedGeneration != inc.Generation {
		return false
	}
	got, err := hex.DecodeString(v)
	return err == nil && hmac.Equal(got, s.decisionMAC(inc, allowed, reason))
}

// keyField is the signing key's entry in its Secret.
const keyField = "incident-signing-key"

// EnsureKey reads the signing key from the Secret namespace/name, creating
// the Secret with a fresh random key when it does not exist (the first
// controller replica to start wins; the others read its key).
func EnsureKey(ctx context.Context, c client.Client, namespace, name string) ([]byte, error) {
	for range 3 {
		var sec corev1.Secret
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &sec)
		if err == nil {
			if k := sec.Data[keyField]; len(k) >= 32 {
				return k, nil
			}
			return nil, fmt.Errorf("secret %s/%s has no %s of at least 32 bytes", namespace, name, keyField)
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read incident signing key %s/%s: %w", namespace, name, err)
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
				Labels: map[string]string{v1alpha1.ManagedByLabel: v1alpha1.ManagedByValue}},
			Data: map[string][]byte{keyField: key},
		}
		if err := c.Create(ctx, &sec); err == nil {
			return key, nil
		} else if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create incident signing key %s/%s: %w", namespace, name, err)
		}
	}
	return nil, fmt.Errorf("incident signing key %s/%s: created and deleted concurrently", namespace, name)
}
