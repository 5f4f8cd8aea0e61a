package controllermgr

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The webhook readiness check fails before the server listens, passes while
// a TLS server answers on the bound address (a wildcard one through
// loopback), and fails again once the server is gone.
func TestServingCheckPassesOnlyWhileTLSAnswers(t *testing.T) {
	var c servingCheck
	req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
	if err := c.Check(req); err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Fatalf("before listening: %v, want not listening yet", err)
	}
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	ln, err := net.Listen("tcp", ":0") // a wildcard address, as the webhook's ":9443"
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.StartTLS()
	c.bound(ln.Addr())
	if err := c.Check(req); err != nil {
		t.Fatalf("while serving TLS on %s: %v", ln.Addr(), err)
	}
	srv.Close()
	if err := c.Check(req); err == nil {
		t.Fatal("the check passes after the server closed")
	}
	// A listener that accepts but does not speak TLS is not serving.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			conn, err := plain.Accept()
			if err != nil {
				return
			}
			conn.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			conn.Close()
		}
	}()
	c.bound(plain.Addr())
	if err := c.Check(req); err == nil {
		t.Fatal("the check passes against a server that does not speak TLS")
	} else if !strings.Contains(err.Error(), "TLS handshake") {
		t.Fatalf("error %v does not say what failed", err)
	}
}
