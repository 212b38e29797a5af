package dns01

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// queryTimeout bounds one question to one resolver.
	queryTimeout = 2 * time.Second
	// maxCNAMEs bounds how many CNAMEs a TXT lookup follows.
	maxCNAMEs = 8
	// resolvConf lists the system's resolvers when none are configured.
	resolvConf = "/etc/resolv.conf"
)

// resolver asks a list of recursive resolvers, in order, each until one
// answers: they are alternatives (as in resolv.conf), not separate views.
type resolver struct {
	servers []string
	// err is why the system's resolvers could not be read; every query
	// returns it.
	err error
}

// newResolver uses servers ("host:port"; a missing port is 53), or the
// system's resolvers from /etc/resolv.conf when there are none.
func newResolver(servers []string) resolver {
	var list []string
	if len(servers) == 0 {
		cfg, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return resolver{err: fmt.Errorf("dns01: read the system's resolvers: %w", err)}
		}
		if len(cfg.Servers) == 0 {
			return resolver{err: fmt.Errorf("dns01: %s lists no resolver", resolvConf)}
		}
		for _, s := range cfg.Servers {
			list = append(list, net.JoinHostPort(s, cfg.Port))
		}
		return resolver{servers: list}
	}
	for _, s := range servers {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, "53")
		}
		list = append(list, s)
	}
	if len(list) == 0 {
		return resolver{err: errors.New("dns01: the resolver list holds only empty entries")}
	}
	return resolver{servers: list}
}

// query asks the resolvers for name's records of type qtype and returns
// the first answer that is NOERROR or NXDOMAIN. The error (no answer, a
// timeout, SERVFAIL from every resolver) is a plain, transient one.
func (r resolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	if r.err != nil {
		return nil, r.err
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(4096, false)
	var errs []error
	for _, srv := range r.servers {
		resp, err := exchange(ctx, m, srv)
		if err == nil {
			if resp.Rcode == dns.RcodeSuccess || resp.Rcode == dns.RcodeNameError {
				return resp, nil
			}
			err = errors.New(dns.RcodeToString[resp.Rcode])
		}
		errs = append(errs, fmt.Errorf("%s: %w", srv, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("dns01: %s %s: %w", dns.TypeToString[qtype], dns.Fqdn(name), errors.Join(errs...))
}

// exchange sends m to one resolver over UDP, and again over TCP when the
// answer was truncated.
func exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: queryTimeout}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, server)
	}
	return resp, err
}

// cname returns the target of name's CNAME, "" if there is none.
func (r resolver) cname(ctx context.Context, name string) (string, error) {
	resp, err := r.query(ctx, name, dns.TypeCNAME)
	if err != nil {
		return "", err
	}
	return cnameIn(resp.Answer, dns.Fqdn(name)), nil
}

// txt returns the TXT values at name. With follow, a CNAME at name (and
// at its target, and so on) is followed: through the chain a recursive
// resolver puts in its answer, or by asking again for a target that it
// did not chase.
func (r resolver) txt(ctx context.Context, name string, follow bool) ([]string, error) {
	name = dns.Fqdn(name)
	for range maxCNAMEs {
		resp, err := r.query(ctx, name, dns.TypeTXT)
		if err != nil {
			return nil, err
		}
		owner := name
		for i := 0; follow && i < maxCNAMEs; i++ {
			next := cnameIn(resp.Answer, owner)
			if next == "" {
				break
			}
			owner = next
		}
		var values []string
		for _, rr := range resp.Answer {
			if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, owner) {
				values = append(values, strings.Join(t.Txt, ""))
			}
		}
		if len(values) > 0 || strings.EqualFold(owner, name) {
			return values, nil
		}
		name = owner
	}
	return nil, fmt.Errorf("dns01: TXT %s: more than %d CNAMEs", name, maxCNAMEs)
}

// cnameIn returns the target of owner's CNAME among rrs, "" if none.
func cnameIn(rrs []dns.RR, owner string) string {
	for _, rr := range rrs {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) {
			return dns.Fqdn(c.Target)
		}
	}
	return ""
}
