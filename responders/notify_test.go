package responders_test

import (
	"net/url"
	"testing"

	"github.com/riposte-dev/riposte/responders"
)

// TestAllowedURLRefusesPathsThatLeaveThePrefix: a tenant allowed
// https://hooks.example/team-a may not reach another path on the same host
// through dot segments, escaped or not, or through forms a server may
// resolve on its own (backslashes, ";", double escaping).
func TestAllowedURLRefusesPathsThatLeaveThePrefix(t *testing.T) {
	allowed := []string{"https://hooks.example/team-a", "https://root.example"}
	for _, tt := range []struct {
		url  string
		want bool
	}{
		{"https://hooks.example/team-a", true},
		{"https://hooks.example/team-a/", true},
		{"https://hooks.example/team-a/alerts", true},
		{"https://hooks.example/team-a/alerts/", true},
		{"https://hooks.example/team-%61/alerts", true}, // unescapes to the prefix
		{"https://root.example", true},
		{"https://root.example/any/path", true},
		{"https://hooks.example/team-a/../admin", false},
		{"https://hooks.example/team-a/..", false},
		{"https://hooks.example/team-a/%2e%2e/admin", false},
		{"https://hooks.example/team-a/%2E%2E/admin", false},
		{"https://hooks.example/team-a/.%2e/admin", false},
		{"https://hooks.example/team-a%2f..%2fadmin", false},
		{"https://hooks.example/team-a/%252e%252e/admin", false},
		{"https://hooks.example/team-a/..;/admin", false},
		{"https://hooks.example/team-a/..%5cadmin", false},
		{"https://hooks.example/team-a/./alerts", false},
		{"https://hooks.example/team-a//alerts", false},
		{"https://hooks.example/team-ab", false},
		{"https://hooks.example/admin", false},
		{"https://root.example/x/../y", false},
		{"http://hooks.example/team-a", false},
		{"https://hooks.example.evil/team-a", false},
		{"https://user:pw@hooks.example/team-a", false},
	} {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatalf("parse %s: %v", tt.url, err)
		}
		if got := responders.AllowedURL(allowed, u); got != tt.want {
			t.Errorf("AllowedURL(%s) = %v, want %v", tt.url, got, tt.want)
		}
	}
}
