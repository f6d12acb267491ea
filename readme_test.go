package hmacauth

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmePrelude declares what README.md's Go snippets take as given: the
// imports they use and the values they start from (a key, a Config, a
// connection, ...). Each snippet becomes the body of a function of its own,
// so a name it declares shadows these.
const readmePrelude = `package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"

	"github.com/hmacauth/hmacauth"
	"github.com/hmacauth/hmacauth/grpcauth"
	"github.com/hmacauth/hmacauth/mpcompat"
	"google.golang.org/grpc"
)

var (
	_ = context.Background
	_ = fmt.Sprint
	_ = log.Fatal
	_ = slog.Warn
	_ = grpc.NewServer
	_ = grpcauth.NewCredentials
	_ = mpcompat.Dial
)

var (
	key    hmacauth.Key
	cfg    *hmacauth.Config
	ring   *hmacauth.Keyring
	ctx    context.Context
	conn   net.Conn
	l      net.Listener
	h      http.Handler
	handle func(net.Conn)
	addr    string
	reply   []byte
	authKey []byte
)

func main() {}
`

var goBlock = regexp.MustCompile("(?s)```go\n(.*?)```")

// TestReadmeSnippetsCompile builds every Go block of README.md, each as the
// body of a function in a module that uses this checkout (and grpcauth's),
// so that a reader who copies one gets code that compiles: no unused or
// redeclared variable, no placeholder.
func TestReadmeSnippetsCompile(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a module with the go command")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlock.FindAllStringSubmatch(string(readme), -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no Go block")
	}
	var src strings.Builder
	src.WriteString(readmePrelude)
	for i, b := range blocks {
		// A //line directive makes compile errors name README.md's lines.
		line := strings.Count(string(readme)[:strings.Index(string(readme), b[0])], "\n") + 2
		fmt.Fprintf(&src, "\nfunc snippet%d() error {\n//line README.md:%d\n%s\treturn nil\n}\n", i, line, b[1])
	}

	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod := fmt.Sprintf(`module readmesnippets

go 1.26.0

require (
	github.com/hmacauth/hmacauth v0.0.0-00010101000000-000000000000
	github.com/hmacauth/hmacauth/grpcauth v0.0.0-00010101000000-000000000000
)

replace github.com/hmacauth/hmacauth => %q

replace github.com/hmacauth/hmacauth/grpcauth => %q
`, root, filepath.Join(root, "grpcauth"))
	var sums []byte
	for _, f := range []string{"go.sum", "grpcauth/go.sum"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, b...)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sums, "main.go": []byte(src.String())} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-o", os.DevNull, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("README.md's Go blocks do not compile (%d blocks, each the body of a function returning error):\n%s", len(blocks), out)
	}
}
