package grpcauth_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"github.com/hmacauth/hmacauth"
	"github.com/hmacauth/hmacauth/grpcauth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A gRPC server and client that share a key; an interceptor logs the key
// ID of each call. In one process, each side has a Config of its own: a
// Config refuses a connection from its own dialer (a reflection).
func Example() {
	key, _ := hmacauth.NewKey("svc-a") // in production: hmacauth.LoadKeys
	serverCreds := grpcauth.NewCredentials(&hmacauth.Config{Keys: []hmacauth.Key{key}})
	clientCreds := grpcauth.NewCredentials(&hmacauth.Config{Keys: []hmacauth.Key{key}})

	srv := grpc.NewServer(grpc.Creds(serverCreds),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, _ := grpcauth.KeyIDFromContext(ctx)
			fmt.Println(info.FullMethod, "called with key", id)
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(clientCreds))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetStatus())
	// Output:
	// /grpc.health.v1.Health/Check called with key svc-a
	// SERVING
}
