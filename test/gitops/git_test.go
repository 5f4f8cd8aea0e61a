package gitops

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxcd/pkg/gittestserver"
	gogit "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// branch is the branch Flux follows.
const branch = "main"

// gitRepo is a team's rules repository on a local Git server: a working
// tree committed with go-git and pushed over HTTP, as a merged pull request
// lands on the branch Flux follows.
type gitRepo struct {
	repo *gogit.Repository
	tree string // the working tree
	// URL is what Flux clones.
	URL string
}

// newGitRepo starts a gittestserver on loopback (stopped at cleanup) and an
// empty working tree whose origin is a repository on it.
func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	// gitkit, behind gittestserver, runs `git upload-pack` and
	// `git receive-pack` for every fetch and push.
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("the local Git server needs the git program (Debian package git): %v", err)
	}
	srv, err := gittestserver.NewTempGitServer()
	if err != nil {
		t.Fatal(err)
	}
	srv.AutoCreate()
	if err := srv.StartHTTP(); err != nil {
		t.Fatalf("start the Git server: %v", err)
	}
	t.Cleanup(func() {
		srv.StopHTTP()
		os.RemoveAll(srv.Root())
	})
	g := &gitRepo{tree: t.TempDir(), URL: srv.HTTPAddress() + "/team/rules.git"}
	g.repo, err = gogit.PlainInitWithOptions(g.tree, &gogit.PlainInitOptions{
		InitOptions: gogit.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(branch)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{g.URL}}); err != nil {
		t.Fatal(err)
	}
	return g
}

// commit writes files (path relative to the repository root → content) into
// the working tree, commits every change and pushes the branch. It returns
// the commit hash and when the push was acknowledged: the moment the change
// is in Git.
func (g *gitRepo) commit(t *testing.T, message string, files map[string][]byte) (string, time.Time) {
	t.Helper()
	for name, data := range files {
		path := filepath.Join(g.tree, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wt, err := g.repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if err := wt.AddWithOptions(&gogit.AddOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	hash, err := wt.Commit(message, &gogit.CommitOptions{
		Author: &object.Signature{Name: "Security Team", Email: "security@example.com", When: time.Now()},
	})
	if err != nil {
		t.Fatalf("commit %q: %v", message, err)
	}
	ref := gitconfig.RefSpec("refs/heads/" + branch + ":refs/heads/" + branch)
	if err := g.repo.Push(&gogit.PushOptions{RemoteName: "origin", RefSpecs: []gitconfig.RefSpec{ref}}); err != nil {
		t.Fatalf("push %q: %v", message, err)
	}
	return hash.String(), time.Now()
}

// fixture reads testdata/commits/<step>: the files a commit changes, with
// ${NOTIFY_URL} replaced.
func fixture(t *testing.T, step, notifyURL string) map[string][]byte {
	t.Helper()
	root := filepath.Join("testdata", "commits", step)
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = bytes.ReplaceAll(data, []byte("${NOTIFY_URL}"), []byte(notifyURL))
		return nil
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("read fixture %s: %v (%d files)", root, err, len(files))
	}
	return files
}
