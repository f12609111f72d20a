// dockmoat-test-frontend: a small BuildKit frontend image for dockmoat's tests. It speaks
// the frontend gateway protocol (grpcclient.RunFromEnvironment) and reads the build's
// Dockerfile through the client's session: `FROM <image>` picks the base, each
// `RUN <shell>` becomes an exec op (sh -c), other lines are ignored. The result also
// holds /frontend, a marker naming this frontend.
package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/frontend/gateway/grpcclient"
	"github.com/moby/buildkit/util/appcontext"
	_ "github.com/moby/buildkit/util/grpcutil/encoding/proto"
)

const marker = "built by dockmoat-test/frontend"

func build(ctx context.Context, c client.Client) (*client.Result, error) {
	opts := c.BuildOpts().Opts
	name := opts["filename"]
	if name == "" {
		name = "Dockerfile"
	}
	src := llb.Local("dockerfile", llb.FollowPaths([]string{name}), llb.SessionID(c.BuildOpts().SessionID), llb.SharedKeyHint("dockerfile"))
	def, err := src.Marshal(ctx)
	if err != nil {
		return nil, err
	}
	res, err := c.Solve(ctx, client.SolveRequest{Definition: def.ToPB()})
	if err != nil {
		return nil, err
	}
	ref, err := res.SingleRef()
	if err != nil {
		return nil, err
	}
	text, err := ref.ReadFile(ctx, client.ReadRequest{Filename: name})
	if err != nil {
		return nil, err
	}
	base := "dockmoat-test/busybox:latest"
	var runs []string
	scanner := bufio.NewScanner(bytes.NewReader(text))
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			base = strings.TrimSpace(line[5:])
		case strings.HasPrefix(line, "RUN "):
			runs = append(runs, strings.TrimSpace(line[4:]))
		}
	}
	state := llb.Image(base)
	for _, cmd := range runs {
		state = state.Run(llb.Args([]string{"/bin/sh", "-c", cmd})).Root()
	}
	state = state.File(llb.Mkfile("/frontend", 0o644, []byte(marker+"\n")))
	def, err = state.Marshal(ctx)
	if err != nil {
		return nil, err
	}
	return c.Solve(ctx, client.SolveRequest{Definition: def.ToPB()})
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-version" {
		fmt.Println(marker)
		return
	}
	if err := grpcclient.RunFromEnvironment(appcontext.Context(), build); err != nil {
		fmt.Fprintf(os.Stderr, "fatal error: %+v\n", err)
		os.Exit(1)
	}
}
