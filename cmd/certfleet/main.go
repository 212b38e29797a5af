// Command certfleet is the local all-in-one server: every route group on
// one mux, the worker and the scheduler as goroutines, state in one bbolt
// file under CERTFLEET_DATA.
//
//	certfleet serve                      run the server (the default)
//	certfleet dead-letters list|redrive  inspect or redrive the issuance dead-letter list
//	certfleet admin create-user ...      create an (administrator) account
//	certfleet version                    print the version
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/dns01"
	"github.com/certfleet/certfleet/shared/identity"
)

const usage = `usage: certfleet [serve | dead-letters list|redrive | version]

  serve                  run the local server (default); configuration comes
                         from the environment, see the README's table
  dead-letters list      show the issuance messages that failed too often
  dead-letters redrive   put them back on the issuance queue
                         (both need the server stopped: it holds the data file)
  admin create-user --email E [--username U] [--name N] [--admin] [--aws]
                         create an active account; the password is read
                         from stdin; --aws writes to the cloud shape's
                         tables (AWS credentials and the function's
                         environment needed) instead of ./data
  admin worker-token [--aws]
                         print the worker token, the Bearer credential of
                         the internal worker routes
  version                print the version`

func main() {
	cmd := "serve"
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve()
	case "dead-letters":
		err = deadLetters(os.Args[2:])
	case "admin":
		err = admin(os.Args[2:], os.Stdin)
	case "version":
		fmt.Println(app.Version)
	case "-h", "--help", "help":
		fmt.Println(usage)
	default:
		fmt.Fprintf(os.Stderr, "certfleet: unknown command %q\n%s\n", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "certfleet:", err)
		os.Exit(1)
	}
}

func serve() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := openLocal(ctx)
	if err != nil {
		return err
	}
	defer a.Close()
	cfg := a.Config
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w (set PORT to use another)", cfg.Port, err)
	}
	a.Log.Info("certfleet is listening", "url", fmt.Sprintf("http://localhost:%d", cfg.Port),
		"version", app.Version, "data", cfg.DataDir)
	return a.Serve(ctx, ln)
}

func deadLetters(args []string) error {
	if len(args) != 1 || (args[0] != "list" && args[0] != "redrive") {
		return fmt.Errorf("usage: certfleet dead-letters list|redrive")
	}
	ctx := context.Background()
	a, err := openLocal(ctx)
	if err != nil {
		return err
	}
	defer a.Close()
	if args[0] == "redrive" {
		n, err := a.Queue.Redrive(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("redrove %d message(s) to the issuance queue\n", n)
		return nil
	}
	dead, err := a.Queue.ListDead(ctx, 1000)
	if err != nil {
		return err
	}
	for _, m := range dead {
		fmt.Printf("%s\t%s\t%d bytes\n", m.ID, m.Kind, len(m.Body))
	}
	fmt.Printf("%d dead message(s)\n", len(dead))
	return nil
}

// openLocal builds the local shape from the environment.
func openLocal(ctx context.Context) (*app.App, error) {
	cfg, err := config.Load(config.Local, os.Getenv)
	if err != nil {
		return nil, err
	}
	return app.Local(ctx, cfg, app.WithDNS01(dns01.Solvers))
}

// openShape builds the cloud shape for --aws, else the local one.
func openShape(ctx context.Context, useAWS bool) (*app.App, error) {
	if useAWS {
		return app.Lambda(ctx)
	}
	return openLocal(ctx)
}

// admin runs the administration subcommands.
func admin(args []string, stdin io.Reader) error {
	if len(args) > 0 && args[0] == "worker-token" {
		return workerToken(args[1:])
	}
	if len(args) == 0 || args[0] != "create-user" {
		return fmt.Errorf("usage: certfleet admin create-user --email E [--username U] [--name N] [--admin] [--aws]\n" +
			"       certfleet admin worker-token [--aws]")
	}
	fs := flag.NewFlagSet("admin create-user", flag.ContinueOnError)
	email := fs.String("email", "", "the account's email address")
	username := fs.String("username", "", "optional user name")
	name := fs.String("name", "", "optional display name")
	isAdmin := fs.Bool("admin", false, "give the account the admin role")
	useAWS := fs.Bool("aws", false, "create it in the cloud shape's tables")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	password, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("read the password from stdin: %w", err)
	}
	ctx := context.Background()
	a, err := openShape(ctx, *useAWS)
	if err != nil {
		return err
	}
	defer a.Close()
	u, err := a.Identity.Register(ctx, identity.Registration{Email: *email, Username: *username, Name: *name,
		Password: strings.TrimRight(password, "\r\n"), Admin: *isAdmin, Active: true})
	if err != nil {
		return err
	}
	fmt.Printf("created user %d <%s> roles=%v\n", u.ID, u.Email, u.Roles)
	return nil
}

// workerToken prints the installation's worker token, the credential of
// the internal worker routes (for a worker running outside certfleet).
func workerToken(args []string) error {
	fs := flag.NewFlagSet("admin worker-token", flag.ContinueOnError)
	useAWS := fs.Bool("aws", false, "read it from the cloud shape's tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	a, err := openShape(ctx, *useAWS)
	if err != nil {
		return err
	}
	defer a.Close()
	token, err := a.Identity.WorkerToken(ctx)
	if err != nil {
		return err
	}
	fmt.Println(token)
	return nil
}
