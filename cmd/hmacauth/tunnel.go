package main

import (
	"fmt"
	"io"
)

type role string

const (
	roleServer role = "server"
	roleClient role = "client"
)

func runTunnel(r role, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintf(stderr, "hmacauth %s: not available yet\n", r)
	return exitFail
}
