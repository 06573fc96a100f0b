// kubeapi: a real Kubernetes API server for netsonde's tests, in one program so the two share
// one compilation of their common modules (etcd's client, gRPC, protobuf):
//
//	kubeapi etcd [etcd flags]            etcd itself (go.etcd.io/etcd/server/v3)
//	kubeapi compact --endpoint URL       compacts etcd's history up to its current revision
//	kubeapi [kube-apiserver flags]       kube-apiserver (k8s.io/kubernetes/cmd/kube-apiserver)
//
// Nothing here changes how either behaves: they are their releases' own entry points.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "etcd":
			etcdmain.Main(append([]string{"etcd"}, os.Args[2:]...))
			return
		case "compact":
			os.Exit(compact(os.Args[2:]))
		}
	}
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}

// compact asks etcd to forget every revision before its current one, so watches that resume
// from an older resourceVersion get "410 Gone" from the API server.
func compact(args []string) int {
	flags := flag.NewFlagSet("compact", flag.ContinueOnError)
	endpoint := flags.String("endpoint", "http://127.0.0.1:2379", "etcd client URL")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "compact: connect:", err)
		return 1
	}
	defer client.Close()
	status, err := client.Get(ctx, "compact-probe")
	if err != nil {
		fmt.Fprintln(os.Stderr, "compact: current revision:", err)
		return 1
	}
	revision := status.Header.Revision
	if _, err := client.Compact(ctx, revision, clientv3.WithCompactPhysical()); err != nil {
		fmt.Fprintln(os.Stderr, "compact:", err)
		return 1
	}
	fmt.Println(revision)
	return 0
}
