package devicetoken_test

import (
	"context"
	"testing"

	"github.com/certfleet/certfleet/shared/identity/devicetoken"
)

func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	svc := newRig(b).service(devicetoken.Config{})
	tok, err := svc.Issue(ctx, 123, 42)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.Verify(ctx, tok.AccessToken); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	ctx := context.Background()
	svc := newRig(b).service(devicetoken.Config{})
	tok, err := svc.Issue(ctx, 123, 42)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := svc.Verify(ctx, tok.AccessToken); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIssue includes the refresh-token transaction, a durable bbolt
// write (fsync) per op.
func BenchmarkIssue(b *testing.B) {
	ctx := context.Background()
	svc := newRig(b).service(devicetoken.Config{})
	if _, err := svc.Issue(ctx, 1, 1); err != nil { // create the key outside the timing
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.Issue(ctx, 123, 42); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRefresh(b *testing.B) {
	ctx := context.Background()
	svc := newRig(b).service(devicetoken.Config{})
	tok, err := svc.Issue(ctx, 1, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if tok, err = svc.Refresh(ctx, tok.RefreshToken); err != nil {
			b.Fatal(err)
		}
	}
}
