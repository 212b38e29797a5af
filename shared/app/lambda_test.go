package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/mototest"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/store/dynamo"
)

// The Lambda shape's tests run against moto; the local ones need nothing.
func TestMain(m *testing.M) {
	pebbletest.ExecProviderMain() // when the test binary runs as lego's exec provider
	os.Exit(mototest.Run(m))
}

// lambdaApp creates, in moto, what template.yaml would (tables, queue and
// DLQ, KMS key), sets the function environment and builds app.Lambda.
func lambdaApp(t *testing.T) *app.App {
	t.Helper()
	lambdaEnv(t)
	a, err := app.Lambda(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// lambdaEnv creates the stack's resources in moto and sets the function
// environment that points at them.
func lambdaEnv(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("t%d-", time.Now().UnixNano())
	if err := dynamo.CreateTables(ctx, dynamodb.NewFromConfig(awsCfg), prefix, app.Tables); err != nil {
		t.Fatal(err)
	}
	sqsc := awssqs.NewFromConfig(awsCfg)
	dlq, err := sqsc.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String(prefix + "issuance-dlq")})
	if err != nil {
		t.Fatal(err)
	}
	main, err := sqsc.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String(prefix + "issuance")})
	if err != nil {
		t.Fatal(err)
	}
	key, err := awskms.NewFromConfig(awsCfg).CreateKey(ctx, &awskms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CERTFLEET_TABLE_PREFIX", prefix)
	t.Setenv("CERTFLEET_ISSUANCE_QUEUE_URL", *main.QueueUrl)
	t.Setenv("CERTFLEET_ISSUANCE_DLQ_URL", *dlq.QueueUrl)
	t.Setenv("CERTFLEET_KMS_KEY_ID", *key.KeyMetadata.KeyId)
	t.Setenv("CERTFLEET_LOG_LEVEL", "warn")
}

func loadEvent(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("../../events/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("events/%s: %v", name, err)
	}
}

func TestReplayHealthEvent(t *testing.T) {
	a := lambdaApp(t)
	var ev events.APIGatewayV2HTTPRequest
	loadEvent(t, "health.json", &ev)
	resp, err := app.HTTPLambda(a.HealthHandler())(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Data map[string]string }
	if err := json.Unmarshal([]byte(resp.Body), &body); err != nil {
		t.Fatalf("body %q: %v", resp.Body, err)
	}
	if resp.StatusCode != 200 || body.Data["store"] != "ok" || body.Data["queue"] != "ok" || body.Data["version"] != app.Version {
		t.Fatalf("health over Lambda: %d %s", resp.StatusCode, resp.Body)
	}
	if resp.Headers["X-Request-Id"] == "" && len(resp.MultiValueHeaders["X-Request-Id"]) == 0 {
		t.Fatalf("no request id header: %v %v", resp.Headers, resp.MultiValueHeaders)
	}

	// The same event against a queue that does not exist reports the
	// queue as unavailable.
	t.Setenv("CERTFLEET_ISSUANCE_QUEUE_URL", os.Getenv("AWS_ENDPOINT_URL")+"/123456789012/no-such-queue")
	broken, err := app.Lambda(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	resp, err = app.HTTPLambda(broken.HealthHandler())(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	var failure struct {
		Error struct {
			Code   int
			Params map[string]string
		}
	}
	json.Unmarshal([]byte(resp.Body), &failure)
	if resp.StatusCode != 503 || failure.Error.Code != 5030 || failure.Error.Params["queue"] != "unavailable" || failure.Error.Params["store"] != "ok" {
		t.Fatalf("health with a missing queue: %d %s", resp.StatusCode, resp.Body)
	}
}

// TestReplayRouteGroupEvents replays each route-group function's sample
// event through its real handler.
func TestReplayRouteGroupEvents(t *testing.T) {
	a := lambdaApp(t)
	for _, c := range []struct {
		event   string
		handler http.Handler
		status  int
		body    string
	}{
		{"auth.json", a.AuthHandler(), 200, `"obtype":"acme_accounts"`},
		{"acmeaccounts.json", a.AcmeAccountsHandler(), 401, `"code":5018`},
		{"acmeapi.json", a.AcmeAPIHandler(), 200, `"name":"letsencrypt"`},
		{"certificates.json", a.CertificatesHandler(), 401, `"code":5018`},
		{"issues.json", a.IssuesHandler(), 401, `"code":5018`},
		{"devices.json", a.DevicesHandler(), 200, `"user_code":`},
		{"deviceself.json", a.DeviceSelfHandler(), 401, `"code":5018`},
		{"challenge.json", a.ChallengeHandler(), 404, ``},
		{"cas.json", a.CAsHandler(), 401, `"code":5018`},
	} {
		var ev events.APIGatewayV2HTTPRequest
		loadEvent(t, c.event, &ev)
		resp, err := app.HTTPLambda(c.handler)(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != c.status || !strings.Contains(resp.Body, c.body) {
			t.Errorf("events/%s: %d %s", c.event, resp.StatusCode, resp.Body)
		}
	}
}

func TestReplayWorkerEvent(t *testing.T) {
	a := lambdaApp(t)
	var ev events.SQSEvent
	loadEvent(t, "worker.json", &ev)
	var ran []string
	a.Steps.Register("demo.succeeds", func(ctx context.Context, m queue.Delivery) error {
		ran = append(ran, string(m.Body))
		return nil
	})
	a.Steps.Register("demo.fails", func(ctx context.Context, m queue.Delivery) error {
		return errors.New("ACME server said 503")
	})
	resp, err := a.WorkerLambda()(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, f := range resp.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	want := []string{ev.Records[1].MessageId, ev.Records[2].MessageId} // the failing and the unregistered kind
	if !slices.Equal(failed, want) {
		t.Fatalf("batchItemFailures = %v, want %v", failed, want)
	}
	if !slices.Equal(ran, []string{`{"issue_id":"41"}`}) {
		t.Fatalf("the succeeding step saw %v", ran)
	}
}

// TestSMTPPasswordIsReadAtTheFirstMail: building the Lambda shape reads
// nothing from SSM (functions without the permission must start); the
// first mail does, and a missing parameter is reported as such.
func TestSMTPPasswordIsReadAtTheFirstMail(t *testing.T) {
	t.Setenv("CERTFLEET_SMTP_HOST", "127.0.0.1")
	t.Setenv("CERTFLEET_SMTP_PORT", "25")
	t.Setenv("CERTFLEET_SMTP_USERNAME", "certfleet")
	t.Setenv("CERTFLEET_SMTP_PASSWORD_SSM", "/certfleet/test/no-such-parameter")
	a := lambdaApp(t)
	_, err := a.Identity.Register(context.Background(), identity.Registration{Email: "mail@example.com", Password: "Mail1Password"})
	if err == nil || !strings.Contains(err.Error(), "could not send mail") {
		t.Fatalf("register without a readable SMTP password: %v", err)
	}
	if ok, _ := a.Identity.Available(context.Background(), "mail@example.com", ""); !ok["email"] {
		t.Fatal("a registration whose mail failed was kept")
	}
}

// TestReplayRenewalEvent: the schedule's event runs one renewal scan,
// which queues a check for a certificate that is due and none for one
// that is not.
func TestReplayRenewalEvent(t *testing.T) {
	a := lambdaApp(t)
	ctx := context.Background()
	u, err := a.Identity.Register(ctx, identity.Registration{Email: "renew@example.com", Password: "Renew1Password", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	acct, err := a.ACME.Create(ctx, u.ID, acmeacct.NewAccount{ProviderName: "letsencrypt", Email: "renew@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, a) // the account's registration step
	now := time.Now()
	for i, renewAt := range []time.Time{now.Add(-time.Hour), now.Add(30 * 24 * time.Hour)} {
		c, err := a.Certs.Create(ctx, u.ID, certs.NewCertificate{DomainName: fmt.Sprintf("r%d.certfleet.test", i), AcctID: acct.ID})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Certs.RecordIssued(ctx, u.ID, c.ID, 1, now.Add(60*24*time.Hour), renewAt, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	var ev events.EventBridgeEvent
	loadEvent(t, "renewal.json", &ev)
	if err := a.RenewalLambda()(ctx, ev); err != nil {
		t.Fatal(err)
	}
	ds, err := a.Queue.Receive(ctx, 10, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Kind != issuance.KindRenewalCheck || !strings.Contains(string(ds[0].Body), `"user_id":`+fmt.Sprint(u.ID)) {
		t.Fatalf("queued %+v; want one renewal check", ds)
	}
}

// drain receives and acknowledges everything queued now.
func drain(t *testing.T, a *app.App) {
	t.Helper()
	for {
		ds, err := a.Queue.Receive(context.Background(), 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			return
		}
		for _, d := range ds {
			if err := a.Queue.Ack(context.Background(), d); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestWorkerLambdaDeadLetters: a record from the dead-letter queue (its
// own event source) marks its issue failed instead of running the step.
func TestWorkerLambdaDeadLetters(t *testing.T) {
	a := lambdaApp(t)
	ctx := context.Background()
	u, err := a.Identity.Register(ctx, identity.Registration{Email: "dead@example.com", Password: "Dead1Password", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	acct, err := a.ACME.Create(ctx, u.ID, acmeacct.NewAccount{ProviderName: "letsencrypt", Email: "dead@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, a)
	c, err := a.Certs.Create(ctx, u.ID, certs.NewCertificate{DomainName: "dead.certfleet.test", AcctID: acct.ID})
	if err != nil {
		t.Fatal(err)
	}
	is, err := a.Issuance.Start(ctx, u.ID, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := a.Queue.Receive(ctx, 1, time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("the first step: %v %v", ds, err)
	}
	kind := ds[0].Kind
	dlqName := path.Base(os.Getenv("CERTFLEET_ISSUANCE_DLQ_URL"))
	ev := events.SQSEvent{Records: []events.SQSMessage{{
		MessageId: "dead-1", ReceiptHandle: "r", Body: string(ds[0].Body),
		Attributes:        map[string]string{"ApproximateReceiveCount": "1"},
		MessageAttributes: map[string]events.SQSMessageAttribute{"kind": {StringValue: &kind, DataType: "String"}},
		EventSourceARN:    "arn:aws:sqs:us-east-1:123456789012:" + dlqName,
	}}}
	resp, err := a.WorkerLambda()(ctx, ev)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("dead letter: %+v, %v", resp, err)
	}
	got, err := a.Issuance.Get(ctx, u.ID, c.ID, is.ID)
	if err != nil || got.Status != "failed" || !strings.Contains(got.Error, "without an answer") {
		t.Fatalf("issue after its dead letter: %s %q, %v", got.Status, got.Error, err)
	}
}
