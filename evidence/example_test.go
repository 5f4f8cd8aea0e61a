package evidence_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/riposte-dev/riposte/evidence"
)

// A bundle is written once and verified later against the manifest hash kept
// in the Incident.
func ExampleDir_Write() {
	root, _ := os.MkdirTemp("", "evidence-")
	defer os.RemoveAll(root)
	store := &evidence.Dir{Root: root, Node: "node-a"}
	sealed, err := store.Write(context.Background(), "shop/incident-1/capture",
		[]evidence.File{{Name: "pod.yaml", Data: []byte("kind: Pod\n")}}, time.Unix(0, 0))
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := evidence.Verify(sealed.Path, sealed.ManifestSHA256)
	fmt.Println(sealed.Files, m.Files[0].Name, m.Files[0].SHA256[:12], err)
	// Output: 1 pod.yaml af0e5d10555f <nil>
}
