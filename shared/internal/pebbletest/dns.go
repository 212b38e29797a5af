package pebbletest

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// StartDNS serves DNS over TCP on a loopback port (Pebble's VA asks its
// -dnsserver over TCP) and returns its "host:port" for Options.DNSServer:
// every A question is answered 127.0.0.1, any other question with no
// answer, so every test name resolves to the in-test responders. It stops
// when the test ends.
func StartDNS(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("pebbletest: dns: %v", err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveDNS(conn)
		}
	}()
	return l.Addr().String()
}

// serveDNS answers length-prefixed queries on one connection.
func serveDNS(conn net.Conn) {
	defer conn.Close()
	for {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		var hdr [2]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(conn, q); err != nil {
			return
		}
		a := loopbackAnswer(q)
		if a == nil {
			return
		}
		if _, err := conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...)); err != nil {
			return
		}
	}
}

// loopbackAnswer answers a query with one question (RFC 1035 §4.1): an A
// record of 127.0.0.1 for type A, nothing for other types; nil for a
// query it cannot read.
func loopbackAnswer(q []byte) []byte {
	const headerLen = 12
	if len(q) < headerLen || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	end := headerLen
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	if end+5 > len(q) { // the root label, QTYPE, QCLASS
		return nil
	}
	isA := binary.BigEndian.Uint16(q[end+1:end+3]) == 1
	// QR and AA set, RA set; the opcode and RD echoed.
	flags := 0x8480 | binary.BigEndian.Uint16(q[2:4])&0x7900
	var an uint16
	if isA {
		an = 1
	}
	out := append([]byte{q[0], q[1]}, 0, 0)
	binary.BigEndian.PutUint16(out[2:], flags)
	out = binary.BigEndian.AppendUint16(out, 1)
	out = binary.BigEndian.AppendUint16(out, an)
	out = append(out, 0, 0, 0, 0)
	out = append(out, q[headerLen:end+5]...)
	if isA {
		// A pointer to the question's name, type A, class IN, TTL 60,
		// four bytes of address.
		out = append(out, 0xc0, headerLen, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
	}
	return out
}
