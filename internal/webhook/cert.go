package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/internal/certs"
)

// Keys of the certificate Secret.
const (
	caCertKey = "ca.crt"
	caKeyKey  = "ca.key"
	certKey   = "tls.crt"
	keyKey    = "tls.key"
)

// CertManager keeps the webhook's serving certificate: a CA and a serving
// certificate stored in a Secret (so replicas and restarts share them),
// renewed before expiry, with the CA patched into the caBundle of the
// ValidatingWebhookConfiguration. No cert-manager needed.
type CertManager struct {
	Client client.Client
	// Namespace and SecretName locate the Secret.
	Namespace, SecretName string
	// Hosts are the serving certificate's names, the Service's DNS name
	// first (service.namespace.svc); IPs are allowed.
	Hosts []string
	// WebhookConfig names the ValidatingWebhookConfiguration to patch; empty
	// skips patching (cert-manager's CA injector may do it instead).
	WebhookConfig string
	Log           logr.Logger

	mu   sync.RWMutex
	cert *tls.Certificate
	ca   []byte
}

// Ensure makes sure the Secret holds a valid CA and serving certificate,
// loads them for serving and patches the caBundle.
func (m *CertManager) Ensure(ctx context.Context) error {
	secret := &corev1.Secret{}
	key := client.ObjectKey{Namespace: m.Namespace, Name: m.SecretName}
	err := m.Client.Get(ctx, key, secret)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get webhook certificate secret %s: %w", key, err)
	}
	data := secret.Data
	if data == nil {
		data = map[string][]byte{}
	}
	changed := false
	ca, err := certs.LoadCA(certs.KeyPair{Cert: data[caCertKey], Key: data[caKeyKey]})
	if err != nil {
		if ca, err = certs.NewCA("riposte-webhook-ca"); err != nil {
			return err
		}
		data[caCertKey], data[caKeyKey] = ca.Cert, ca.Key
		changed = true
	}
	if changed || certs.NeedsRenewal(data[certKey], ca, m.Hosts[0], time.Now()) {
		kp, err := ca.Serving(m.Hosts...)
		if err != nil {
			return err
		}
		data[certKey], data[keyKey] = kp.Cert, kp.Key
		changed = true
	}
	if changed {
		secret.Data = data
		if exists {
			err = m.Client.Update(ctx, secret)
		} else {
			secret.ObjectMeta = metav1.ObjectMeta{Name: m.SecretName, Namespace: m.Namespace}
			secret.Type = corev1.SecretTypeTLS
			err = m.Client.Create(ctx, secret)
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			// Another replica won the race: use what it wrote.
			return m.Ensure(ctx)
		}
		if err != nil {
			return fmt.Errorf("write webhook certificate secret %s: %w", key, err)
		}
		m.Log.Info("issued webhook serving certificate", "secret", key, "hosts", m.Hosts)
	}
	pair, err := tls.X509KeyPair(data[certKey], data[keyKey])
	if err != nil {
		return fmt.Errorf("load webhook serving certificate: %w", err)
	}
	m.mu.Lock()
	m.cert, m.ca = &pair, data[caCertKey]
	m.mu.Unlock()
	return m.PatchCABundle(ctx, data[caCertKey])
}

// PatchCABundle writes the CA into every webhook of the configuration.
func (m *CertManager) PatchCABundle(ctx context.Context, ca []byte) error {
	if m.WebhookConfig == "" {
		return nil
	}
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := m.Client.Get(ctx, client.ObjectKey{Name: m.WebhookConfig}, cfg); err != nil {
		if apierrors.IsNotFound(err) {
			m.Log.Info("webhook configuration not found; caBundle not patched", "name", m.WebhookConfig)
			return nil
		}
		return fmt.Errorf("get ValidatingWebhookConfiguration %s: %w", m.WebhookConfig, err)
	}
	before := cfg.DeepCopy()
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].ClientConfig.CABundle = ca
	}
	same := true
	for i := range cfg.Webhooks {
		same = same && bytes.Equal(before.Webhooks[i].ClientConfig.CABundle, ca)
	}
	if same {
		return nil
	}
	if err := m.Client.Patch(ctx, cfg, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("patch caBundle of ValidatingWebhookConfiguration %s: %w", m.WebhookConfig, err)
	}
	return nil
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (m *CertManager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cert == nil {
		return nil, fmt.Errorf("webhook serving certificate not loaded yet")
	}
	return m.cert, nil
}

// CA returns the CA certificate (PEM) once Ensure has run.
func (m *CertManager) CA() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ca
}

// Run re-checks the certificate and caBundle every interval until ctx ends,
// so a rotated or edited Secret or configuration heals by itself.
func (m *CertManager) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := m.Ensure(ctx); err != nil {
				m.Log.Error(err, "renew webhook certificate")
			}
		}
	}
}
