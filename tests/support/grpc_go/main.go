// A real gRPC-Go server and client for netsonde's gRPC tests: the same service as
// grpc_peer.py (demo.Echo, raw-bytes methods, no .proto), so either peer can face the other.
//
//	grpc_peer server              listens on 127.0.0.1 (a free port, printed), serves until
//	                              stdin closes, then prints what it handled as JSON
//	grpc_peer client PORT [SIZES] makes a fixed set of small calls on one connection or, with
//	                              SIZES (bytes, comma-separated), for each size two unary Blob
//	                              calls and one Chat stream of three messages each way; prints
//	                              each call's method, status and message counts as JSON
//
// Over TLS when asked: the server with GRPC_PEER_TLS_CERT and GRPC_PEER_TLS_KEY (PEM files),
// the client with GRPC_PEER_TLS_CA (the CA that signed the server's certificate, for
// 127.0.0.1).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const service = "demo.Echo"

// Messages of up to 4 MiB and their 5-byte prefix must pass: the defaults stop at 4 MiB.
const maxMessage = 16 << 20

// rawCodec passes message bytes through untouched: the wire is all these tests need.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

// "proto", so the content type stays plain application/grpc as with generated code.
func (rawCodec) Name() string { return "proto" }

type call struct {
	Method    string `json:"method"`
	Status    string `json:"status"`
	Requests  int    `json:"requests"`
	Responses int    `json:"responses"`
}

type ledger struct {
	mu    sync.Mutex
	calls []call
}

func (l *ledger) note(method string, code codes.Code, requests, responses int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, call{service + "/" + method, statusName(code), requests, responses})
}

// statusName is the code's name as grpcio spells it (NOT_FOUND, not NotFound).
func statusName(code codes.Code) string {
	names := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
		codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
		codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
		codes.Unauthenticated: "UNAUTHENTICATED",
	}
	if n, ok := names[code]; ok {
		return n
	}
	return code.String()
}

func unary(l *ledger, name string, f func([]byte) ([]byte, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req []byte
			if err := dec(&req); err != nil {
				return nil, err
			}
			resp, err := f(req)
			if err != nil {
				l.note(name, status.Code(err), 1, 0)
				return nil, err
			}
			l.note(name, codes.OK, 1, 1)
			return &resp, nil
		},
	}
}

func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out
}

func serve() {
	l := &ledger{}
	desc := grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			unary(l, "Say", func(req []byte) ([]byte, error) {
				if string(req) == "missing" {
					return nil, status.Error(codes.NotFound, "no such thing")
				}
				return reversed(req), nil
			}),
			unary(l, "Fail", func([]byte) ([]byte, error) {
				return nil, status.Error(codes.Internal, "it broke")
			}),
			// As large an answer as the question.
			unary(l, "Blob", func(req []byte) ([]byte, error) { return reversed(req), nil }),
		},
		Streams: []grpc.StreamDesc{
			{StreamName: "Count", ServerStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
				var req []byte
				if err := s.RecvMsg(&req); err != nil {
					return err
				}
				n, _ := strconv.Atoi(string(req))
				for i := 0; i < n; i++ {
					msg := []byte(strconv.Itoa(i))
					if err := s.SendMsg(&msg); err != nil {
						return err
					}
				}
				l.note("Count", codes.OK, 1, n)
				return nil
			}},
			{StreamName: "Sum", ClientStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
				n := 0
				for {
					var msg []byte
					err := s.RecvMsg(&msg)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return err
					}
					n++
				}
				out := []byte(strconv.Itoa(n))
				l.note("Sum", codes.OK, n, 1)
				return s.SendMsg(&out)
			}},
			{StreamName: "Chat", ServerStreams: true, ClientStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
				n := 0
				for {
					var msg []byte
					err := s.RecvMsg(&msg)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return err
					}
					n++
					up := []byte(strings.ToUpper(string(msg)))
					if err := s.SendMsg(&up); err != nil {
						return err
					}
				}
				l.note("Chat", codes.OK, n, n)
				return nil
			}},
		},
	}
	options := []grpc.ServerOption{grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage)}
	if cert := os.Getenv("GRPC_PEER_TLS_CERT"); cert != "" {
		creds, err := credentials.NewServerTLSFromFile(cert, os.Getenv("GRPC_PEER_TLS_KEY"))
		if err != nil {
			fail(err)
		}
		options = append(options, grpc.Creds(creds))
	}
	server := grpc.NewServer(options...)
	server.RegisterService(&desc, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	fmt.Println(lis.Addr().(*net.TCPAddr).Port)
	go func() {
		if err := server.Serve(lis); err != nil {
			fail(err)
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	server.GracefulStop()
	l.mu.Lock()
	defer l.mu.Unlock()
	out, _ := json.Marshal(l.calls)
	fmt.Println(string(out))
}

func client(port string, sizes []int) {
	creds := insecure.NewCredentials()
	if ca := os.Getenv("GRPC_PEER_TLS_CA"); ca != "" {
		var err error
		if creds, err = credentials.NewClientTLSFromFile(ca, ""); err != nil {
			fail(err)
		}
	}
	conn, err := grpc.NewClient("127.0.0.1:"+port,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}),
			grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	var calls []call
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	invoke := func(method string, req []byte) {
		var resp []byte
		err := conn.Invoke(ctx, "/"+service+"/"+method, &req, &resp)
		if err != nil {
			calls = append(calls, call{service + "/" + method, statusName(status.Code(err)), 1, 0})
			return
		}
		calls = append(calls, call{service + "/" + method, "OK", 1, 1})
	}
	stream := func(method string, desc grpc.StreamDesc, msgs [][]byte) {
		s, err := conn.NewStream(ctx, &desc, "/"+service+"/"+method)
		if err != nil {
			fail(err)
		}
		for _, m := range msgs {
			m := m
			if err := s.SendMsg(&m); err != nil {
				fail(err)
			}
		}
		if err := s.CloseSend(); err != nil {
			fail(err)
		}
		got := 0
		for {
			var resp []byte
			err := s.RecvMsg(&resp)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				calls = append(calls, call{service + "/" + method, statusName(status.Code(err)), len(msgs), got})
				return
			}
			got++
		}
		calls = append(calls, call{service + "/" + method, "OK", len(msgs), got})
	}
	bidi := grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	if len(sizes) == 0 {
		invoke("Say", []byte("hello"))
		invoke("Say", []byte("again"))
		invoke("Say", []byte("missing"))
		invoke("Fail", []byte("x"))
		invoke("Nope", []byte("x"))
		stream("Count", grpc.StreamDesc{ServerStreams: true}, [][]byte{[]byte("3")})
		stream("Sum", grpc.StreamDesc{ClientStreams: true},
			[][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d")})
		stream("Chat", bidi, [][]byte{[]byte("x"), []byte("y")})
	}
	for _, size := range sizes {
		blob := make([]byte, size)
		for i := range blob {
			blob[i] = byte('a' + i%26)
		}
		invoke("Blob", blob)
		invoke("Blob", blob)
		stream("Chat", bidi, [][]byte{blob, blob, blob})
	}
	out, _ := json.Marshal(calls)
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "grpc_peer:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: grpc_peer server | client PORT [SIZES]"))
	}
	switch os.Args[1] {
	case "server":
		serve()
	case "client":
		if len(os.Args) < 3 {
			fail(errors.New("client needs a port"))
		}
		var sizes []int
		if len(os.Args) > 3 {
			for _, s := range strings.Split(os.Args[3], ",") {
				n, err := strconv.Atoi(s)
				if err != nil {
					fail(err)
				}
				sizes = append(sizes, n)
			}
		}
		// A line on stdin first, when asked: the test knows the pid before any connection.
		if os.Getenv("GRPC_PEER_WAIT") != "" {
			_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		}
		client(os.Args[2], sizes)
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}
